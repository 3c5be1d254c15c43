// Argument checks shared by the CPU and CUDA implementations of the noise-contract ops
// (philox_fill_, normal_fill_), and the entry points of the ops and their *_counter_
// variants over a device's fill functions (op_wrappers.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "op_checks.h"
#include "op_wrappers.h"

namespace scorefast {

// philox_fill_'s out, once it is known to be on the device: int64 [P, Q, 4], contiguous.
inline void check_philox_fill(const at::Tensor& out, int64_t step, int64_t particle_offset) {
  TORCH_CHECK(out.scalar_type() == at::kLong, "out must be int64, got ", out.scalar_type());
  TORCH_CHECK(out.dim() == 3 && out.size(2) == 4, "out must have shape [P, Q, 4], got ", out.sizes());
  TORCH_CHECK(out.is_contiguous(), "out must be contiguous");
  check_noise_counter(step, particle_offset);
  TORCH_CHECK(out.size(1) <= (int64_t{1} << 32), "Q must be <= 2^32, got ", out.size(1));
}

// normal_fill_'s out, once it is known to be on the device: a storage dtype (the float32
// normals are rounded to it), dim 0 = particles, contiguous, within the noise's reach.
inline void check_normal_fill(const at::Tensor& out, int64_t step, int64_t particle_offset) {
  storage_type_of(out, "out");
  TORCH_CHECK(out.dim() >= 1, "out must have at least one dimension (dim 0 = particles)");
  TORCH_CHECK(out.is_contiguous(), "out must be contiguous");
  check_noise_counter(step, particle_offset);
  if (out.numel() > 0) check_noise_extent(particle_offset, out.size(0), out.numel() / out.size(0));
}

// The entry points of philox_fill_, normal_fill_ and their *_counter_ variants on one device.
// Device: the device's policy (op_wrappers.h) and
//   static void philox_fill(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset,
//                           const int64_t* step_counter);
//   static void normal_fill(... the same ...);
// which check out and fill it with the noise of `step`, or of step_counter's value when set.
template <typename Device>
struct NoiseOps {
  static void philox_fill_(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset) {
    Device::philox_fill(out, seed, step, particle_offset, nullptr);
  }

  static void normal_fill_(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset) {
    Device::normal_fill(out, seed, step, particle_offset, nullptr);
  }

  static void philox_fill_counter_(at::Tensor& out, int64_t seed, const at::Tensor& step, int64_t particle_offset) {
    const NoiseStep noise_step = noise_step_of<Device>(step, out, "out");
    Device::philox_fill(out, seed, noise_step.value, particle_offset, noise_step.counter);
  }

  static void normal_fill_counter_(at::Tensor& out, int64_t seed, const at::Tensor& step, int64_t particle_offset) {
    const NoiseStep noise_step = noise_step_of<Device>(step, out, "out");
    Device::normal_fill(out, seed, noise_step.value, particle_offset, noise_step.counter);
  }
};

}  // namespace scorefast
