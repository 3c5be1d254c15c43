// CPU implementation of scorefast::langevin_step, langevin_step_ and langevin_step_counter_
// (entry points and checks in csrc/langevin_op.h).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "../langevin_op.h"
#include "cpu_device.h"
#include "cpu_kernels.h"

namespace scorefast {
namespace {

constexpr int64_t kGrainElements = 1 << 15;

struct LangevinCpu : CpuDevice {
  // Runs the kernel for a prepared call, writing into `out` (contiguous, may alias x).
  // step_counter is always null here: the CPU reads a step tensor on the host.
  static void run(LangevinCall& call, const at::Tensor& out, const int64_t* /*step_counter*/) {
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
    at::parallel_for(0, P * D, kGrainElements, [&](int64_t begin, int64_t end) { k.langevin(args, begin, end); });
  }
};

using Ops = LangevinOps<LangevinCpu>;

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) {
  m.impl("langevin_step", &Ops::langevin_step);
  m.impl("langevin_step_", &Ops::langevin_step_);
  m.impl("langevin_step_counter_", &Ops::langevin_step_counter_);
}

}  // namespace scorefast
