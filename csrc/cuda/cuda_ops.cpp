// CUDA implementations of the scorefast ops: argument checks (shared with the CPU ops in
// csrc/langevin_op.h, csrc/dsm_op.h, csrc/gmm_op.h, csrc/chain_op.h), device guard and
// stream, then the torch-free launchers of
// csrc/cuda/*.cu. Compiled only in CUDA builds (setup.py defines SCOREFAST_WITH_CUDA).
// Only c10/ATen core headers: the current stream comes from the CUDA device-guard
// implementation registered by libtorch, so no c10/cuda or ATen/cuda header is needed.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "../chain_op.h"
#include "../dsm_op.h"
#include "../gmm_op.h"
#include "../langevin_op.h"
#include "../ops_library.h"
#include "launchers.h"
#include "scorefast/philox.h"

namespace scorefast {
namespace {

// The current CUDA stream of `device` (the one torch's CUDA ops on that device use).
cudaStream_t current_stream(const c10::Device& device) {
#if defined(SCOREFAST_CUDA_EMULATION)
  (void)device;
  return nullptr;  // the emulator runs every launch synchronously
#else
  const c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
  return static_cast<cudaStream_t>(impl.getStreamNativeHandle(impl.getStream(device)));
#endif
}

void check_cuda_result(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "scorefast CUDA kernel ", what, " failed: ",
              cudaGetErrorName(err), ": ", cudaGetErrorString(err));
}

void check_cuda_tensor(const at::Tensor& t, const char* name) {
#if defined(SCOREFAST_CUDA_EMULATION)
  TORCH_CHECK(t.is_cpu(), name, " must be a CPU tensor for the emulated CUDA kernel, got ", t.device());
#else
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor for the CUDA kernel, got ", t.device());
#endif
}

// step_counter: null, or a device int64 read as the step when the kernel runs (the
// *_counter_ ops; see launchers.h).
void run_philox_fill(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset,
                     const int64_t* step_counter) {
  check_cuda_tensor(out, "out");
  TORCH_CHECK(out.scalar_type() == at::kLong, "out must be int64, got ", out.scalar_type());
  TORCH_CHECK(out.dim() == 3 && out.size(2) == 4, "out must have shape [P, Q, 4], got ", out.sizes());
  TORCH_CHECK(out.is_contiguous(), "out must be contiguous");
  check_noise_counter(step, particle_offset);
  TORCH_CHECK(out.size(1) <= (int64_t{1} << 32), "Q must be <= 2^32, got ", out.size(1));
  if (out.numel() == 0) return;
  const c10::DeviceGuard guard(out.device());
  check_cuda_result(
      cuda::launch_philox_fill(out.data_ptr<int64_t>(), out.size(0), out.size(1),
                               static_cast<uint64_t>(seed), static_cast<uint32_t>(step),
                               static_cast<uint64_t>(particle_offset), current_stream(out.device()),
                               step_counter),
      "philox_fill_");
}

void run_normal_fill(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset,
                     const int64_t* step_counter) {
  check_cuda_tensor(out, "out");
  TORCH_CHECK(out.scalar_type() == at::kFloat, "out must be float32, got ", out.scalar_type());
  TORCH_CHECK(out.dim() >= 1, "out must have at least one dimension (dim 0 = particles)");
  TORCH_CHECK(out.is_contiguous(), "out must be contiguous");
  check_noise_counter(step, particle_offset);
  if (out.numel() == 0) return;
  const int64_t D = out.numel() / out.size(0);
  check_particle_size(D);
  const c10::DeviceGuard guard(out.device());
  check_cuda_result(
      cuda::launch_normal_fill(out.data_ptr<float>(), out.size(0), D, static_cast<uint64_t>(seed),
                               static_cast<uint32_t>(step), static_cast<uint64_t>(particle_offset),
                               current_stream(out.device()), step_counter),
      "normal_fill_");
}

void philox_fill_cuda(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset) {
  run_philox_fill(out, seed, step, particle_offset, nullptr);
}

void normal_fill_cuda(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset) {
  run_normal_fill(out, seed, step, particle_offset, nullptr);
}

void philox_fill_counter_cuda(at::Tensor& out, int64_t seed, const at::Tensor& step, int64_t particle_offset) {
  check_step_tensor(step, out, "out");
  run_philox_fill(out, seed, 0, particle_offset, step.const_data_ptr<int64_t>());
}

void normal_fill_counter_cuda(at::Tensor& out, int64_t seed, const at::Tensor& step, int64_t particle_offset) {
  check_step_tensor(step, out, "out");
  run_normal_fill(out, seed, 0, particle_offset, step.const_data_ptr<int64_t>());
}

// Runs the kernels for a prepared call on x's device, writing into `out` (contiguous,
// same device; may alias x). step_counter: as for run_philox_fill.
void run_langevin_cuda(LangevinCall& call, const at::Tensor& out, const int64_t* step_counter = nullptr) {
  LangevinArgs args = call.args;
  args.out = out.data_ptr();
  if (args.num_particles * args.particle_size == 0) return;
  const c10::DeviceGuard guard(call.x.device());
  const cudaStream_t stream = current_stream(call.x.device());
  at::Tensor factors;  // freed after the launches: the caching allocator orders reuse on this stream
  if (call.max_score_norm.has_value()) {
    factors = at::empty({args.num_particles}, call.x.options().dtype(acc_dtype_of(call.x)));
    check_cuda_result(cuda::launch_score_clip_factors(args, *call.max_score_norm, factors.data_ptr(), stream),
                      "langevin_step (score clip factors)");
    args.score_factor = factors.data_ptr();
  }
  check_cuda_result(cuda::launch_langevin(args, stream, step_counter), "langevin_step");
}

// prepare_langevin_call checks that every tensor is on x's device; x must be a CUDA one.
LangevinCall prepare_cuda_call(
    const at::Tensor& x, const at::Tensor& score, const std::optional<at::Tensor>& score_cond,
    double guidance, double step_size, const std::optional<at::Tensor>& step_size_per_particle,
    double noise_scale, const std::optional<at::Tensor>& noise_scale_per_particle,
    const std::optional<at::Tensor>& noise, int64_t seed, int64_t step, int64_t particle_offset,
    std::optional<double> clamp_min, std::optional<double> clamp_max,
    std::optional<double> max_score_norm) {
  check_cuda_tensor(x, "x");
  // .contiguous() copies run on x's device and its current stream.
  const c10::DeviceGuard guard(x.device());
  return prepare_langevin_call(x, score, score_cond, guidance, step_size, step_size_per_particle,
                               noise_scale, noise_scale_per_particle, noise, seed, step,
                               particle_offset, clamp_min, clamp_max, max_score_norm);
}

at::Tensor langevin_step_cuda(const at::Tensor& x, const at::Tensor& score,
                              const std::optional<at::Tensor>& score_cond, double guidance,
                              double step_size, const std::optional<at::Tensor>& step_size_per_particle,
                              double noise_scale,
                              const std::optional<at::Tensor>& noise_scale_per_particle,
                              const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                              int64_t particle_offset, std::optional<double> clamp_min,
                              std::optional<double> clamp_max, std::optional<double> max_score_norm) {
  LangevinCall call = prepare_cuda_call(x, score, score_cond, guidance, step_size,
                                        step_size_per_particle, noise_scale,
                                        noise_scale_per_particle, noise, seed, step,
                                        particle_offset, clamp_min, clamp_max, max_score_norm);
  at::Tensor out = at::empty_like(call.x, at::MemoryFormat::Contiguous);
  run_langevin_cuda(call, out);
  return out;
}

void langevin_step_cuda_(at::Tensor& x, const at::Tensor& score,
                         const std::optional<at::Tensor>& score_cond, double guidance,
                         double step_size, const std::optional<at::Tensor>& step_size_per_particle,
                         double noise_scale, const std::optional<at::Tensor>& noise_scale_per_particle,
                         const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                         int64_t particle_offset, std::optional<double> clamp_min,
                         std::optional<double> clamp_max, std::optional<double> max_score_norm) {
  LangevinCall call = prepare_cuda_call(x, score, score_cond, guidance, step_size,
                                        step_size_per_particle, noise_scale,
                                        noise_scale_per_particle, noise, seed, step,
                                        particle_offset, clamp_min, clamp_max, max_score_norm);
  if (x.is_contiguous()) {
    run_langevin_cuda(call, x);  // elementwise: each thread reads its elements before writing them
  } else {
    at::Tensor out = at::empty_like(call.x, at::MemoryFormat::Contiguous);
    run_langevin_cuda(call, out);
    const c10::DeviceGuard guard(x.device());
    x.copy_(out);
  }
}

// langevin_step_ with contract noise whose step is read from `step` when the kernel runs.
void langevin_step_counter_cuda_(at::Tensor& x, const at::Tensor& score,
                                 const std::optional<at::Tensor>& score_cond, double guidance,
                                 double step_size, const std::optional<at::Tensor>& step_size_per_particle,
                                 double noise_scale, const std::optional<at::Tensor>& noise_scale_per_particle,
                                 int64_t seed, const at::Tensor& step, int64_t particle_offset,
                                 std::optional<double> clamp_min, std::optional<double> clamp_max,
                                 std::optional<double> max_score_norm) {
  check_cuda_tensor(x, "x");
  check_step_tensor(step, x, "x");
  LangevinCall call = prepare_cuda_call(x, score, score_cond, guidance, step_size,
                                        step_size_per_particle, noise_scale,
                                        noise_scale_per_particle, std::nullopt, seed, 0,
                                        particle_offset, clamp_min, clamp_max, max_score_norm);
  const int64_t* counter = step.const_data_ptr<int64_t>();
  if (x.is_contiguous()) {
    run_langevin_cuda(call, x, counter);
  } else {
    at::Tensor out = at::empty_like(call.x, at::MemoryFormat::Contiguous);
    run_langevin_cuda(call, out, counter);
    const c10::DeviceGuard guard(x.device());
    x.copy_(out);
  }
}

// prepare_gmm_call checks that every tensor is on x's device; x must be a CUDA one.
std::tuple<at::Tensor, at::Tensor> gmm_score_cuda(const at::Tensor& x, const at::Tensor& means,
                                                  const at::Tensor& var, const at::Tensor& inv_var,
                                                  const std::optional<at::Tensor>& factor,
                                                  const at::Tensor& log_const,
                                                  const std::optional<at::Tensor>& sigma2) {
  check_cuda_tensor(x, "x");
  // .contiguous() copies and the kernel run on x's device and its current stream.
  const c10::DeviceGuard guard(x.device());
  GmmCall call = prepare_gmm_call(x, means, var, inv_var, factor, log_const, sigma2);
  const int64_t N = call.args.num_points, D = call.args.dim;
  at::Tensor score = at::empty({N, D}, x.options());
  at::Tensor log_prob = at::empty({N}, x.options());
  if (N == 0) return {score, log_prob};
  GmmArgs args = call.args;
  args.score = score.data_ptr();
  args.log_prob = log_prob.data_ptr();
  check_cuda_result(cuda::launch_gmm_score(args, current_stream(x.device())), "gmm_score");
  return {score, log_prob};
}

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) {
  m.impl("philox_fill_", &philox_fill_cuda);
  m.impl("normal_fill_", &normal_fill_cuda);
  m.impl("langevin_step", &langevin_step_cuda);
  m.impl("langevin_step_", &langevin_step_cuda_);
  m.impl("philox_fill_counter_", &philox_fill_counter_cuda);
  m.impl("normal_fill_counter_", &normal_fill_counter_cuda);
  m.impl("langevin_step_counter_", &langevin_step_counter_cuda_);
  m.impl("gmm_score", &gmm_score_cuda);
}

// ---------------------------------------------------------------------------------------
// Denoising score matching: dsm_perturb, dsm_loss, dsm_loss_backward.

namespace {

// prepare_dsm_call checks that sigma is on the input's device; the input must be a CUDA one.
// The guard also covers the .contiguous() copies (on the input's device and current stream).
DsmCall prepare_dsm_cuda_call(const at::Tensor& input, const char* input_name, const at::Tensor& sigma,
                              double power, bool eps_form, int64_t seed, int64_t step,
                              int64_t particle_offset) {
  check_cuda_tensor(input, input_name);
  const c10::DeviceGuard guard(input.device());
  return prepare_dsm_call(input, input_name, sigma, power, eps_form, seed, step, particle_offset);
}

at::Tensor dsm_perturb_cuda(const at::Tensor& x, const at::Tensor& sigma, int64_t seed, int64_t step,
                            int64_t particle_offset) {
  DsmCall call = prepare_dsm_cuda_call(x, "x", sigma, 2.0, false, seed, step, particle_offset);
  const c10::DeviceGuard guard(call.input.device());
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmArgs args = call.args;
  args.out = out.data_ptr();
  check_cuda_result(cuda::launch_dsm_perturb(args, current_stream(call.input.device())), "dsm_perturb");
  return out;
}

at::Tensor dsm_loss_cuda(const at::Tensor& pred, const at::Tensor& sigma, double power, bool eps_form,
                         int64_t seed, int64_t step, int64_t particle_offset) {
  DsmCall call = prepare_dsm_cuda_call(pred, "pred", sigma, power, eps_form, seed, step, particle_offset);
  const c10::DeviceGuard guard(call.input.device());
  at::Tensor out = at::empty({call.args.batch}, call.input.options().dtype(acc_dtype_of(call.input)));
  if (call.args.batch == 0) return out;
  if (call.args.sample_size == 0) {
    out.zero_();
    return out;
  }
  DsmArgs args = call.args;
  args.out = out.data_ptr();
  check_cuda_result(cuda::launch_dsm_loss(args, current_stream(call.input.device())), "dsm_loss");
  return out;
}

at::Tensor dsm_loss_backward_cuda(const at::Tensor& grad_per_sample, const at::Tensor& pred,
                                  const at::Tensor& sigma, double power, bool eps_form, int64_t seed,
                                  int64_t step, int64_t particle_offset) {
  DsmCall call = prepare_dsm_cuda_call(pred, "pred", sigma, power, eps_form, seed, step, particle_offset);
  TORCH_CHECK(grad_per_sample.dim() == 1 && grad_per_sample.size(0) == call.args.batch,
              "grad_per_sample must have shape [B] = [", call.args.batch, "], got ", grad_per_sample.sizes());
  TORCH_CHECK(grad_per_sample.scalar_type() == acc_dtype_of(pred), "grad_per_sample must be ",
              acc_dtype_of(pred), ", got ", grad_per_sample.scalar_type());
  TORCH_CHECK(grad_per_sample.device() == pred.device(), "grad_per_sample must be on the device of pred (",
              pred.device(), "), got ", grad_per_sample.device());
  const c10::DeviceGuard guard(call.input.device());
  at::Tensor g = grad_per_sample.contiguous();
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmArgs args = call.args;
  args.grad_per_sample = g.data_ptr();
  args.out = out.data_ptr();
  check_cuda_result(cuda::launch_dsm_loss_backward(args, current_stream(call.input.device())),
                    "dsm_loss_backward");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) {
  m.impl("dsm_perturb", &dsm_perturb_cuda);
  m.impl("dsm_loss", &dsm_loss_cuda);
  m.impl("dsm_loss_backward", &dsm_loss_backward_cuda);
}

// ---------------------------------------------------------------------------------------
// gmm_chain_: whole chains for mixture targets, in place on x.

namespace {

void gmm_chain_cuda_(at::Tensor& x, const at::Tensor& means, const at::Tensor& var, const at::Tensor& log_const,
                     const std::optional<at::Tensor>& factor, const at::Tensor& step_size, const at::Tensor& sigma2,
                     bool mala, int64_t seed, int64_t step_offset, int64_t particle_offset, int64_t trajectory_every,
                     const std::optional<at::Tensor>& trajectory, const std::optional<at::Tensor>& accepted) {
  check_cuda_tensor(x, "x");
  // The mixture's .contiguous() copies, the workspace and the kernel: x's device and stream.
  const c10::DeviceGuard guard(x.device());
  const ChainCall call = prepare_chain_call(x, means, var, log_const, factor, step_size, sigma2, mala, seed,
                                            step_offset, particle_offset, trajectory_every, trajectory, accepted);
  const ChainArgs& c = call.args;
  if (c.mixture.num_points == 0 || c.num_steps == 0) return;
  size_t bytes = 0;
  check_cuda_result(cuda::gmm_chain_workspace_size(c, bytes), "gmm_chain_ (workspace size)");
  at::Tensor workspace;  // freed after the launch: the caching allocator orders reuse on this stream
  if (bytes > 0) workspace = at::empty({static_cast<int64_t>(bytes)}, x.options().dtype(at::kByte));
  check_cuda_result(cuda::launch_gmm_chain(c, bytes > 0 ? workspace.data_ptr() : nullptr, bytes,
                                           current_stream(x.device())),
                    "gmm_chain_");
}

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) { m.impl("gmm_chain_", &gmm_chain_cuda_); }

}  // namespace scorefast
