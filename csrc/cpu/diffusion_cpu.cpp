// CPU implementation of scorefast::reverse_step, reverse_step_, snr_corrector_step and
// snr_corrector_step_ (entry points and checks in csrc/diffusion_op.h).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../diffusion_op.h"
#include "cpu_device.h"
#include "cpu_kernels.h"

namespace scorefast {
namespace {

constexpr int64_t kGrainElements = 1 << 15;

int64_t grain_particles(int64_t D) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(D, 1)); }

template <typename Acc>
void fill(const at::Tensor& t, double value) {
  Acc* p = t.data_ptr<Acc>();
  std::fill(p, p + t.numel(), static_cast<Acc>(value));
}

struct DiffusionCpu : CpuDevice {
  // Runs reverse_step for a prepared call, writing into `out` (contiguous, may alias x).
  static void run(ReverseCall& call, const at::Tensor& out) {
    ReverseArgs args = call.args;
    args.out = out.data_ptr();
    const int64_t P = args.num_particles, D = args.particle_size;
    if (P * D == 0) return;
    const auto& k = cpu::kernels();
    at::Tensor factors;
    if (call.max_score_norm.has_value()) {
      const double max_norm = *call.max_score_norm;
      std::vector<double> g_sq(P);
      at::parallel_for(0, P, grain_particles(D),
                       [&](int64_t begin, int64_t end) { k.diffusion_norms(args, g_sq.data(), nullptr, begin, end); });
      factors = at::empty({P}, call.x.options().dtype(acc_dtype_of(call.x)));
      for (int64_t p = 0; p < P; ++p) {
        const double f = clip_factor_of(g_sq[p], max_norm);
        if (factors.scalar_type() == at::kDouble) {
          factors.data_ptr<double>()[p] = f;
        } else {
          factors.data_ptr<float>()[p] = static_cast<float>(f);
        }
      }
      args.score_factor = factors.data_ptr();
    }
    at::parallel_for(0, P * D, kGrainElements, [&](int64_t begin, int64_t end) { k.reverse_step(args, begin, end); });
  }

  // Runs snr_corrector_step: per sample, the norms and the step of each particle in one pass
  // over particles; with the batch means, the norms of every particle first, then the step.
  static void run_corrector(ReverseCall& call, const at::Tensor& out, const at::Tensor& step_sizes) {
    ReverseArgs args = call.args;
    args.out = out.data_ptr();
    const int64_t P = args.num_particles, D = args.particle_size;
    if (P == 0) return;
    const auto& k = cpu::kernels();
    if (!call.batch_mean) {
      at::parallel_for(0, P, grain_particles(D), [&](int64_t begin, int64_t end) {
        k.snr_corrector(args, call.snr, step_sizes.data_ptr(), begin, end);
      });
      return;
    }
    std::vector<double> g_sq(P), z_sq(P);
    at::parallel_for(0, P, grain_particles(D), [&](int64_t begin, int64_t end) {
      k.diffusion_norms(args, g_sq.data(), z_sq.data(), begin, end);
    });
    double g_sum = 0.0, z_sum = 0.0;
    for (int64_t p = 0; p < P; ++p) {
      g_sum += std::sqrt(g_sq[p]);
      z_sum += std::sqrt(z_sq[p]);
    }
    const double eps = snr_step_size(g_sum / static_cast<double>(P), z_sum / static_cast<double>(P), call.snr);
    if (step_sizes.scalar_type() == at::kDouble) {
      fill<double>(step_sizes, eps);
    } else {
      fill<float>(step_sizes, eps);
    }
    if (D == 0) return;
    args.x_coef = 1.0;
    args.score_coef = eps;
    args.noise_scale = std::sqrt(2.0 * eps);
    at::parallel_for(0, P * D, kGrainElements, [&](int64_t begin, int64_t end) { k.reverse_step(args, begin, end); });
  }
};

using Ops = DiffusionOps<DiffusionCpu>;

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) {
  m.impl("reverse_step", &Ops::reverse_step);
  m.impl("reverse_step_", &Ops::reverse_step_);
  m.impl("snr_corrector_step", &Ops::snr_corrector_step);
  m.impl("snr_corrector_step_", &Ops::snr_corrector_step_);
}

}  // namespace scorefast
