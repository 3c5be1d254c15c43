// Argument checks every op shares (dtypes, the noise counter, the step tensor of the
// *_counter_ ops), used by the per-op checks in csrc/<op>_op.h on every device (only
// c10/ATen core headers).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

#include "scorefast/philox.h"
#include "scorefast/storage.h"

namespace scorefast {

inline StorageType storage_type_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return StorageType::kFloat32;
    case at::kDouble:
      return StorageType::kFloat64;
    case at::kHalf:
      return StorageType::kFloat16;
    case at::kBFloat16:
      return StorageType::kBFloat16;
    default:
      TORCH_CHECK(false, name, " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
  }
}

// The dtype of per-particle coefficient tensors: the kernel's math type.
inline at::ScalarType acc_dtype_of(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_noise_counter(int64_t step, int64_t particle_offset) {
  TORCH_CHECK(step >= 0 && static_cast<uint64_t>(step) <= kMaxStep,
              "step must be in [0, 2^32) (one 32-bit counter word), got ", step);
  TORCH_CHECK(particle_offset >= 0, "particle_offset must be >= 0, got ", particle_offset);
}

// The step tensor of the *_counter_ ops: int64 with one element, on the device of `like`.
// Its value is read when the kernel runs (on the host for CPU tensors, where it is checked).
inline void check_step_tensor(const at::Tensor& step, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(step.scalar_type() == at::kLong && step.numel() == 1,
              "step must be an int64 tensor with one element, got ", step.scalar_type(), " of shape ", step.sizes());
  TORCH_CHECK(step.device() == like.device(), "step must be on the device of ", like_name, " (", like.device(),
              "), got ", step.device());
}

// What the noise counter reaches for num_particles particles of D elements from particle_offset:
// D <= 2^34 (ceil(D / 4) is MALA's uniform's 32-bit counter word), and the flat element indices
// (particle_offset + p) D + d below 2^63.
inline void check_noise_extent(int64_t particle_offset, int64_t num_particles, int64_t D) {
  TORCH_CHECK(D <= (int64_t{1} << 34),
              "elements per particle must be <= 2^34 (ceil(D / 4) is a 32-bit counter word), got ", D);
  if (num_particles == 0 || D == 0) return;
  const uint64_t end = static_cast<uint64_t>(particle_offset) + static_cast<uint64_t>(num_particles);  // < 2^64
  TORCH_CHECK(end <= (uint64_t{1} << 63) / static_cast<uint64_t>(D),
              "(particle_offset + number of particles) * elements per particle must be <= 2^63 (the noise's flat "
              "element index), got (",
              particle_offset, " + ", num_particles, ") * ", D);
}

// An input of an in-place update of x must not share part of x's memory (the kernels would
// read elements they already wrote). As PyTorch's own check, only contiguous tensors are
// decided (the kernels update others through a contiguous copy, after reading every input);
// the same elements (score is x) are allowed: each is read before it is written.
inline void check_no_partial_overlap(const at::Tensor& x, const std::optional<at::Tensor>& t, const char* name) {
  if (!t.has_value() || t->device() != x.device() || !x.is_contiguous() || !t->is_contiguous() || x.numel() == 0 ||
      t->numel() == 0 || x.storage().data() != t->storage().data()) {
    return;
  }
  const auto* x0 = static_cast<const char*>(x.data_ptr());
  const auto* t0 = static_cast<const char*>(t->data_ptr());
  const auto* x1 = x0 + x.numel() * x.element_size();
  const auto* t1 = t0 + t->numel() * t->element_size();
  if (x0 == t0 && x1 == t1 && x.scalar_type() == t->scalar_type()) return;
  TORCH_CHECK(!(x0 < t1 && t0 < x1), name,
              " partially overlaps x in memory: the in-place update would read elements it has already written "
              "(pass a copy, e.g. ",
              name, ".clone())");
}

}  // namespace scorefast
