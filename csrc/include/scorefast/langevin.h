// langevin_step: x_new = clamp(x + a_p * c_p * g + b_p * z), g = s_u + w (s_c - s_u),
// c_p = min(1, max_norm / ||g_p||) when score-norm clipping is on.
// Torch-free: shared by the CPU kernels and the CUDA launchers.
#pragma once

#include <cstdint>

#include "scorefast/storage.h"

namespace scorefast {

struct LangevinArgs {
  int64_t num_particles = 0;                  // P: size of dim 0
  int64_t particle_size = 0;                  // D: elements per particle (product of the other dims)
  StorageType dtype = StorageType::kFloat32;  // of x, score, score_cond and out

  const void* x = nullptr;           // [P, D], contiguous
  const void* score = nullptr;       // [P, D], contiguous; s_u when guidance is on
  const void* score_cond = nullptr;  // [P, D] or null (no guidance)
  double guidance = 1.0;             // w

  // Per-particle arrays are contiguous [P] of the acc type (double for double storage,
  // float otherwise); when null the scalar applies to every particle.
  double step_size = 0.0;  // a
  const void* step_size_per_particle = nullptr;
  double noise_scale = 0.0;  // b
  const void* noise_scale_per_particle = nullptr;
  // Multiplier of the score from norm clipping, [P] acc type, or null.
  const void* score_factor = nullptr;

  // Explicit noise [P, D] (any storage type), or null for counter-based noise.
  const void* noise = nullptr;
  StorageType noise_dtype = StorageType::kFloat32;
  uint64_t seed = 0;
  uint32_t step = 0;
  uint64_t particle_offset = 0;

  // Missing bounds are -inf / +inf; NaN stays NaN.
  bool has_clamp = false;
  double clamp_min = 0.0;
  double clamp_max = 0.0;

  void* out = nullptr;  // [P, D], contiguous; may be x itself (in-place)
};

// True when every particle shares a, b and has no clipping factor.
inline bool uniform_coefficients(const LangevinArgs& a) {
  return a.step_size_per_particle == nullptr && a.noise_scale_per_particle == nullptr && a.score_factor == nullptr;
}

// Whether any noise term is present (b == 0 for everyone skips the noise entirely).
inline bool needs_noise(const LangevinArgs& a) { return a.noise_scale_per_particle != nullptr || a.noise_scale != 0.0; }

template <typename Acc>
SF_HOST_DEVICE Acc clamp_keep_nan(Acc v, Acc lo, Acc hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

}  // namespace scorefast
