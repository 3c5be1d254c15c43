// CPU implementations of the noise-contract ops (philox_fill_, normal_fill_).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../langevin_op.h"
#include "cpu_kernels.h"
#include "scorefast/philox.h"

namespace scorefast {
namespace {

constexpr int64_t kGrainElements = 1 << 15;

void philox_fill_cpu(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset) {
  TORCH_CHECK(out.device().is_cpu(), "out must be a CPU tensor, got ", out.device());
  TORCH_CHECK(out.scalar_type() == at::kLong, "out must be int64, got ", out.scalar_type());
  TORCH_CHECK(out.dim() == 3 && out.size(2) == 4, "out must have shape [P, Q, 4], got ", out.sizes());
  TORCH_CHECK(out.is_contiguous(), "out must be contiguous");
  check_noise_counter(step, particle_offset);
  TORCH_CHECK(out.size(1) <= (int64_t{1} << 32), "Q must be <= 2^32, got ", out.size(1));
  const int64_t P = out.size(0), Q = out.size(1);
  int64_t* data = out.data_ptr<int64_t>();
  const uint64_t key = static_cast<uint64_t>(seed);
  at::parallel_for(0, P * Q, kGrainElements / 4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p = i / Q, q = i - p * Q;
      const PhiloxWords w = noise_words(key, static_cast<uint64_t>(particle_offset) + p,
                                        static_cast<uint32_t>(step), static_cast<uint32_t>(q));
      data[4 * i + 0] = w.w0;
      data[4 * i + 1] = w.w1;
      data[4 * i + 2] = w.w2;
      data[4 * i + 3] = w.w3;
    }
  });
}

void normal_fill_cpu(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset) {
  TORCH_CHECK(out.device().is_cpu(), "out must be a CPU tensor, got ", out.device());
  TORCH_CHECK(out.scalar_type() == at::kFloat, "out must be float32, got ", out.scalar_type());
  TORCH_CHECK(out.dim() >= 1, "out must have at least one dimension (dim 0 = particles)");
  TORCH_CHECK(out.is_contiguous(), "out must be contiguous");
  check_noise_counter(step, particle_offset);
  if (out.numel() == 0) return;
  const int64_t D = out.numel() / out.size(0);
  check_particle_size(D);
  float* data = out.data_ptr<float>();
  const auto& k = cpu::kernels();
  at::parallel_for(0, out.numel(), kGrainElements, [&](int64_t begin, int64_t end) {
    k.normal_fill(data, D, static_cast<uint64_t>(seed), static_cast<uint32_t>(step),
                  static_cast<uint64_t>(particle_offset), begin, end);
  });
}

// The *_counter_ variants: on the CPU the step tensor is simply read (and checked) here.
int64_t read_step(const at::Tensor& step, const at::Tensor& like, const char* like_name) {
  check_step_tensor(step, like, like_name);
  return step.item<int64_t>();
}

void philox_fill_counter_cpu(at::Tensor& out, int64_t seed, const at::Tensor& step, int64_t particle_offset) {
  philox_fill_cpu(out, seed, read_step(step, out, "out"), particle_offset);
}

void normal_fill_counter_cpu(at::Tensor& out, int64_t seed, const at::Tensor& step, int64_t particle_offset) {
  normal_fill_cpu(out, seed, read_step(step, out, "out"), particle_offset);
}

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) {
  m.impl("philox_fill_", &philox_fill_cpu);
  m.impl("normal_fill_", &normal_fill_cpu);
  m.impl("philox_fill_counter_", &philox_fill_counter_cpu);
  m.impl("normal_fill_counter_", &normal_fill_counter_cpu);
}

}  // namespace scorefast
