// CPU implementations of scorefast::dsm_perturb, dsm_loss, dsm_loss_backward (argument checks
// in csrc/dsm_op.h).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>

#include "../dsm_op.h"
#include "cpu_device.h"
#include "cpu_kernels.h"

namespace scorefast {
namespace {

using RangeFn = void (*)(const DsmArgs&, int64_t, int64_t);

void run_rows(const DsmArgs& args, RangeFn fn) {
  const int64_t B = args.batch, D = args.sample_size;
  if (B * D == 0) return;
  // ~32k elements per task: a small batch (4096 x 2) stays on one thread (waking the others
  // costs more than its work)
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / D);
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) { fn(args, begin, end); });
}

// sigma's values are checked here, while the kernel reads them anyway, rather than by a
// separate reduction in Python (which costs as much as the kernel for small batches).
void check_sigma_values(const DsmCall& call) {
  const int64_t B = call.args.batch;
  auto check = [&](auto* s) {
    for (int64_t i = 0; i < B; ++i) {
      const double v = static_cast<double>(s[i]);
      TORCH_CHECK_VALUE(v > 0 && v < HUGE_VAL, "sigma must be finite and > 0 for every particle, got ", v,
                        " at particle ", i);
    }
  };
  if (call.sigma.scalar_type() == at::kDouble)
    check(call.sigma.data_ptr<double>());
  else
    check(call.sigma.data_ptr<float>());
}

at::Tensor dsm_perturb_cpu(const at::Tensor& x, const at::Tensor& sigma, int64_t seed, int64_t step,
                           int64_t particle_offset) {
  CpuDevice::check(x, "x");
  DsmCall call = prepare_dsm_call(x, "x", sigma, 2.0, false, seed, step, particle_offset);
  check_sigma_values(call);
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmArgs args = call.args;
  args.out = out.data_ptr();
  run_rows(args, cpu::kernels().dsm_perturb);
  return out;
}

at::Tensor dsm_loss_cpu(const at::Tensor& pred, const at::Tensor& sigma, double power, bool eps_form, int64_t seed,
                        int64_t step, int64_t particle_offset) {
  CpuDevice::check(pred, "pred");
  DsmCall call = prepare_dsm_call(pred, "pred", sigma, power, eps_form, seed, step, particle_offset);
  check_sigma_values(call);
  at::Tensor out = at::empty({call.args.batch}, pred.options().dtype(acc_dtype_of(pred)));
  DsmArgs args = call.args;
  args.out = out.data_ptr();
  if (args.sample_size == 0) {
    out.zero_();
    return out;
  }
  run_rows(args, cpu::kernels().dsm_loss);
  return out;
}

at::Tensor dsm_loss_backward_cpu(const at::Tensor& grad_per_sample, const at::Tensor& pred, const at::Tensor& sigma,
                                 double power, bool eps_form, int64_t seed, int64_t step, int64_t particle_offset) {
  CpuDevice::check(pred, "pred");
  DsmCall call = prepare_dsm_call(pred, "pred", sigma, power, eps_form, seed, step, particle_offset);
  check_sigma_values(call);
  TORCH_CHECK(grad_per_sample.dim() == 1 && grad_per_sample.size(0) == call.args.batch,
              "grad_per_sample must have shape [B] = [", call.args.batch, "], got ", grad_per_sample.sizes());
  TORCH_CHECK(grad_per_sample.scalar_type() == acc_dtype_of(pred), "grad_per_sample must be ", acc_dtype_of(pred),
              ", got ", grad_per_sample.scalar_type());
  CpuDevice::check(grad_per_sample, "grad_per_sample");
  at::Tensor g = grad_per_sample.contiguous();
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmArgs args = call.args;
  args.grad_per_sample = g.data_ptr();
  args.out = out.data_ptr();
  run_rows(args, cpu::kernels().dsm_backward);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) {
  m.impl("dsm_perturb", &dsm_perturb_cpu);
  m.impl("dsm_loss", &dsm_loss_cpu);
  m.impl("dsm_loss_backward", &dsm_loss_backward_cpu);
}

}  // namespace scorefast
