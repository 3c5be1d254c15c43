// CPU implementations of the noise-contract ops (philox_fill_, normal_fill_ and their
// *_counter_ variants; entry points and checks in csrc/noise_op.h).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../noise_op.h"
#include "cpu_device.h"
#include "cpu_kernels.h"
#include "memory_hints.h"
#include "scorefast/philox.h"

namespace scorefast {
namespace {

constexpr int64_t kGrainElements = 1 << 15;

// step_counter is always null here: the CPU reads a step tensor on the host.
struct NoiseCpu : CpuDevice {
  static void philox_fill(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset,
                          const int64_t* /*step_counter*/) {
    TORCH_CHECK(out.device().is_cpu(), "out must be a CPU tensor, got ", out.device());
    check_philox_fill(out, step, particle_offset);
    const int64_t P = out.size(0), Q = out.size(1);
    int64_t* data = out.data_ptr<int64_t>();
    const uint64_t key = static_cast<uint64_t>(seed);
    at::parallel_for(0, P * Q, kGrainElements / 4, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t p = i / Q, q = i - p * Q;
        const PhiloxWords w = noise_words(key, static_cast<uint64_t>(particle_offset) + p, static_cast<uint32_t>(step),
                                          static_cast<uint32_t>(q));
        data[4 * i + 0] = w.w0;
        data[4 * i + 1] = w.w1;
        data[4 * i + 2] = w.w2;
        data[4 * i + 3] = w.w3;
      }
    });
  }

  static void normal_fill(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset,
                          const int64_t* /*step_counter*/) {
    TORCH_CHECK(out.device().is_cpu(), "out must be a CPU tensor, got ", out.device());
    check_normal_fill(out, step, particle_offset);
    if (out.numel() == 0) return;
    const int64_t D = out.numel() / out.size(0);
    void* data = out.data_ptr();
    const StorageType type = storage_type_of(out, "out");
    // A fresh out from torch's allocator (normal() under torch.compile, or a caller's) takes
    // huge pages this way, sparing its first-touch faults; on pages that are already there
    // (normal()'s outputs from the cache of released ones) the hint changes nothing.
    cpu::advise_huge_pages(data, out.nbytes());
    const auto& k = cpu::kernels();
    at::parallel_for(0, out.numel(), kGrainElements, [&](int64_t begin, int64_t end) {
      k.normal_fill(data, type, D, static_cast<uint64_t>(seed), static_cast<uint32_t>(step),
                    static_cast<uint64_t>(particle_offset), begin, end);
    });
  }
};

using Ops = NoiseOps<NoiseCpu>;

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) {
  m.impl("philox_fill_", &Ops::philox_fill_);
  m.impl("normal_fill_", &Ops::normal_fill_);
  m.impl("philox_fill_counter_", &Ops::philox_fill_counter_);
  m.impl("normal_fill_counter_", &Ops::normal_fill_counter_);
}

}  // namespace scorefast
