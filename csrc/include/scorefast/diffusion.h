// reverse_step: x_new = clamp(c_x x + c_s c_p g + b z), g = s_u + w (s_c - s_u),
// c_p = min(1, max_norm / ||g_p||) when score-norm clipping is on;
// snr_corrector_step: the same with c_x = 1, c_s = eps_p, b = sqrt(2 eps_p) and
// eps_p = 2 (snr ||z_p|| / ||g_p||)^2 (or from the batch means of the norms).
// Torch-free: shared by the CPU kernels and the CUDA launchers.
#pragma once

#include <cmath>
#include <cstdint>

#include "scorefast/storage.h"

namespace scorefast {

struct ReverseArgs {
  int64_t num_particles = 0;                  // P: size of dim 0
  int64_t particle_size = 0;                  // D: elements per particle (product of the other dims)
  StorageType dtype = StorageType::kFloat32;  // of x, score, score_cond and out

  const void* x = nullptr;           // [P, D], contiguous
  const void* score = nullptr;       // [P, D], contiguous; g_u when guidance is on
  const void* score_cond = nullptr;  // [P, D] or null (no guidance)
  double guidance = 1.0;             // w

  // Per-particle arrays are contiguous [P] of the acc type (double for double storage,
  // float otherwise); when null the scalar applies to every particle.
  double x_coef = 1.0;  // c_x
  const void* x_coef_per_particle = nullptr;
  double score_coef = 0.0;  // c_s
  const void* score_coef_per_particle = nullptr;
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
  double clamp_min = -INFINITY;
  double clamp_max = INFINITY;

  void* out = nullptr;  // [P, D], contiguous; may be x itself (in-place)
};

// Whether any noise term is present (b == 0 for everyone skips the noise entirely).
inline bool reverse_needs_noise(const ReverseArgs& a) {
  return a.noise_scale_per_particle != nullptr || a.noise_scale != 0.0;
}

// The clip factor of a particle from its squared score norm: min(1, max_norm / ||g||), NaN
// when the norm is NaN.
SF_HOST_DEVICE double clip_factor_of(double sum_sq, double max_norm) {
  const double norm = sqrt(sum_sq);
  return !(norm <= max_norm) ? max_norm / norm : 1.0;
}

// The corrector's step size eps = 2 (snr ||z|| / ||g||)^2 from the norms (float64).
SF_HOST_DEVICE double snr_step_size(double g_norm, double z_norm, double snr) {
  const double r = snr * z_norm / g_norm;
  return 2.0 * (r * r);
}

}  // namespace scorefast
