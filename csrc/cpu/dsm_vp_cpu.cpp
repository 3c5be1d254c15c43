// CPU implementations of scorefast::dsm_vp_perturb, dsm_vp_loss, dsm_vp_loss_backward (argument
// checks in csrc/dsm_vp_op.h; the kernels, per instruction set, in isa_dsm_vp_kernels.inc).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "../dsm_vp_op.h"
#include "cpu_device.h"
#include "cpu_kernels.h"

namespace scorefast {
namespace {

using RangeFn = void (*)(const DsmVpArgs&, int64_t, int64_t);

void run_rows(const DsmVpArgs& args, RangeFn fn) {
  const int64_t B = args.batch, D = args.sample_size;
  if (B * D == 0) return;
  // ~32k elements per task, as the DSM kernels
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / D);
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) { fn(args, begin, end); });
}

void check_cpu(const at::Tensor& pred, const std::optional<at::Tensor>& x) {
  CpuDevice::check(pred, "pred");
  if (x.has_value()) CpuDevice::check(*x, "x");
}

at::Tensor dsm_vp_perturb_cpu(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& sigma, int64_t seed,
                              int64_t step, int64_t particle_offset) {
  CpuDevice::check(x, "x");
  DsmVpCall call = prepare_dsm_vp_perturb(x, alpha, sigma, seed, step, particle_offset);
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmVpArgs args = call.args;
  args.out = out.data_ptr();
  run_rows(args, cpu::kernels().dsm_vp_perturb);
  return out;
}

at::Tensor dsm_vp_loss_cpu(const at::Tensor& pred, const std::optional<at::Tensor>& x, const at::Tensor& a,
                           const at::Tensor& c, const at::Tensor& weight, int64_t seed, int64_t step,
                           int64_t particle_offset) {
  check_cpu(pred, x);
  DsmVpCall call = prepare_dsm_vp_loss(pred, x, a, c, weight, seed, step, particle_offset);
  at::Tensor out = at::empty({call.args.batch}, pred.options().dtype(acc_dtype_of(pred)));
  if (call.args.sample_size == 0) return out.zero_();
  DsmVpArgs args = call.args;
  args.out = out.data_ptr();
  run_rows(args, cpu::kernels().dsm_vp_loss);
  return out;
}

at::Tensor dsm_vp_loss_backward_cpu(const at::Tensor& grad_per_sample, const at::Tensor& pred,
                                    const std::optional<at::Tensor>& x, const at::Tensor& a, const at::Tensor& c,
                                    const at::Tensor& weight, int64_t seed, int64_t step, int64_t particle_offset) {
  check_cpu(pred, x);
  DsmVpCall call = prepare_dsm_vp_loss(pred, x, a, c, weight, seed, step, particle_offset);
  check_dsm_vp_grad_per_sample(grad_per_sample, pred);
  at::Tensor g = grad_per_sample.contiguous();
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmVpArgs args = call.args;
  args.grad_per_sample = g.data_ptr();
  args.out = out.data_ptr();
  run_rows(args, cpu::kernels().dsm_vp_backward);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) {
  m.impl("dsm_vp_perturb", &dsm_vp_perturb_cpu);
  m.impl("dsm_vp_loss", &dsm_vp_loss_cpu);
  m.impl("dsm_vp_loss_backward", &dsm_vp_loss_backward_cpu);
}

}  // namespace scorefast
