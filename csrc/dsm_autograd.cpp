// Autograd of scorefast::dsm_loss, in C++ so that a small DSM step pays no Python on the
// way forward or back. The backward regenerates z in dsm_loss_backward; only the prediction
// and sigma are saved (both are the caller's tensors).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "op_schemas.h"

namespace scorefast {
namespace {

at::Tensor call_loss(const at::Tensor& pred, const at::Tensor& sigma, double power, bool eps_form, int64_t seed,
                     int64_t step, int64_t particle_offset) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow(SCOREFAST_OP_NAME("dsm_loss"), "").typed<decltype(call_loss)>();
  return op.call(pred, sigma, power, eps_form, seed, step, particle_offset);
}

at::Tensor call_backward(const at::Tensor& grad, const at::Tensor& pred, const at::Tensor& sigma, double power,
                         bool eps_form, int64_t seed, int64_t step, int64_t particle_offset) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow(SCOREFAST_OP_NAME("dsm_loss_backward"), "")
                       .typed<decltype(call_backward)>();
  return op.call(grad, pred, sigma, power, eps_form, seed, step, particle_offset);
}

class DsmLoss : public torch::autograd::Function<DsmLoss> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& pred, const at::Tensor& sigma,
                            double power, bool eps_form, int64_t seed, int64_t step, int64_t particle_offset) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({pred, sigma});
    ctx->saved_data["power"] = power;
    ctx->saved_data["eps_form"] = eps_form;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["step"] = step;
    ctx->saved_data["particle_offset"] = particle_offset;
    return call_loss(pred, sigma, power, eps_form, seed, step, particle_offset);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!ctx->needs_input_grad(1), "dsm_loss: gradients with respect to sigma are not supported");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& pred = saved[0];
    const at::Tensor& sigma = saved[1];
    const at::ScalarType acc = pred.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor grad = call_backward(grads[0].to(acc).contiguous(), pred, sigma, ctx->saved_data["power"].toDouble(),
                                    ctx->saved_data["eps_form"].toBool(), ctx->saved_data["seed"].toInt(),
                                    ctx->saved_data["step"].toInt(), ctx->saved_data["particle_offset"].toInt());
    return {grad.to(pred.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(),                at::Tensor(), at::Tensor()};
  }
};

at::Tensor dsm_loss_autograd(const at::Tensor& pred, const at::Tensor& sigma, double power, bool eps_form,
                             int64_t seed, int64_t step, int64_t particle_offset) {
  return DsmLoss::apply(pred, sigma, power, eps_form, seed, step, particle_offset);
}

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, Autograd, m) { m.impl("dsm_loss", &dsm_loss_autograd); }

}  // namespace scorefast
