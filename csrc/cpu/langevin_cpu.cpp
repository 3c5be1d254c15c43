// CPU implementation of scorefast::langevin_step / langevin_step_.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../langevin_op.h"
#include "cpu_kernels.h"
#include "memory_hints.h"

namespace scorefast {
namespace {

constexpr int64_t kGrainElements = 1 << 15;

// Runs the kernel for a prepared call, writing into `out` (contiguous, may alias x).
void run_langevin_cpu(LangevinCall& call, const at::Tensor& out) {
  LangevinArgs args = call.args;
  args.out = out.data_ptr();
  const int64_t P = args.num_particles, D = args.particle_size;
  if (P * D == 0) return;
  const auto& k = cpu::kernels();
  at::Tensor factors;
  if (call.max_score_norm.has_value()) {
    factors = at::empty({P}, call.x.options().dtype(acc_dtype_of(call.x)));
    const double max_norm = *call.max_score_norm;
    const int64_t grain_rows = std::max<int64_t>(1, kGrainElements / D);
    at::parallel_for(0, P, grain_rows, [&](int64_t begin, int64_t end) {
      k.score_clip_factors(args, max_norm, factors.data_ptr(), begin, end);
    });
    args.score_factor = factors.data_ptr();
  }
  at::parallel_for(0, P * D, kGrainElements,
                   [&](int64_t begin, int64_t end) { k.langevin(args, begin, end); });
}

void check_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "x must be a CPU tensor for the CPU kernel, got ", x.device());
}

at::Tensor langevin_step_cpu(const at::Tensor& x, const at::Tensor& score,
                             const std::optional<at::Tensor>& score_cond, double guidance,
                             double step_size, const std::optional<at::Tensor>& step_size_per_particle,
                             double noise_scale,
                             const std::optional<at::Tensor>& noise_scale_per_particle,
                             const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                             int64_t particle_offset, std::optional<double> clamp_min,
                             std::optional<double> clamp_max, std::optional<double> max_score_norm) {
  check_cpu(x);
  LangevinCall call = prepare_langevin_call(x, score, score_cond, guidance, step_size,
                                            step_size_per_particle, noise_scale,
                                            noise_scale_per_particle, noise, seed, step,
                                            particle_offset, clamp_min, clamp_max, max_score_norm);
  at::Tensor out = at::empty_like(call.x, at::MemoryFormat::Contiguous);
  cpu::advise_huge_pages(out.data_ptr(), out.nbytes());
  run_langevin_cpu(call, out);
  return out;
}

void langevin_step_cpu_(at::Tensor& x, const at::Tensor& score,
                        const std::optional<at::Tensor>& score_cond, double guidance,
                        double step_size, const std::optional<at::Tensor>& step_size_per_particle,
                        double noise_scale, const std::optional<at::Tensor>& noise_scale_per_particle,
                        const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                        int64_t particle_offset, std::optional<double> clamp_min,
                        std::optional<double> clamp_max, std::optional<double> max_score_norm) {
  check_cpu(x);
  LangevinCall call = prepare_langevin_call(x, score, score_cond, guidance, step_size,
                                            step_size_per_particle, noise_scale,
                                            noise_scale_per_particle, noise, seed, step,
                                            particle_offset, clamp_min, clamp_max, max_score_norm);
  if (x.is_contiguous()) {
    run_langevin_cpu(call, x);  // elementwise: each element is read before it is written
  } else {
    at::Tensor out = at::empty_like(call.x, at::MemoryFormat::Contiguous);
    run_langevin_cpu(call, out);
    x.copy_(out);
  }
}

// langevin_step_ whose step comes from a tensor: on the CPU it is read (and checked) here.
void langevin_step_counter_cpu_(at::Tensor& x, const at::Tensor& score,
                                const std::optional<at::Tensor>& score_cond, double guidance,
                                double step_size, const std::optional<at::Tensor>& step_size_per_particle,
                                double noise_scale, const std::optional<at::Tensor>& noise_scale_per_particle,
                                int64_t seed, const at::Tensor& step, int64_t particle_offset,
                                std::optional<double> clamp_min, std::optional<double> clamp_max,
                                std::optional<double> max_score_norm) {
  check_cpu(x);
  check_step_tensor(step, x, "x");
  langevin_step_cpu_(x, score, score_cond, guidance, step_size, step_size_per_particle, noise_scale,
                     noise_scale_per_particle, std::nullopt, seed, step.item<int64_t>(), particle_offset,
                     clamp_min, clamp_max, max_score_norm);
}

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) {
  m.impl("langevin_step", &langevin_step_cpu);
  m.impl("langevin_step_", &langevin_step_cpu_);
  m.impl("langevin_step_counter_", &langevin_step_counter_cpu_);
}

}  // namespace scorefast
