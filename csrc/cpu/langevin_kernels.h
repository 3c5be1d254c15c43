// langevin_step on the CPU over a range of flattened elements, in tiles that stay in L1:
// the tile's noise is generated first (or read from an explicit noise tensor), then one
// fused pass computes x + a*g + b*z. Included inside an ISA namespace by isa_*.cpp after
// noise_kernels.h, which provides fill_normals().
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "scorefast/langevin.h"
#include "scorefast/storage.h"

namespace langevin_detail {

using scorefast::LangevinArgs;
using scorefast::Storage;

constexpr int64_t kTile = 2048;

template <typename T, bool kGuided, bool kNoise, bool kClamp, typename Acc = typename Storage<T>::acc>
static inline void update_run(const T* x, const T* score, const T* score_cond, const Acc* z, T* out,
                              int64_t n, Acc a, Acc b, Acc w, Acc lo, Acc hi) {
  for (int64_t k = 0; k < n; ++k) {
    Acc g = Storage<T>::load(score + k);
    if (kGuided) g = g + w * (Storage<T>::load(score_cond + k) - g);
    Acc v = Storage<T>::load(x + k) + a * g;
    if (kNoise) v = v + b * z[k];
    if (kClamp) v = scorefast::clamp_keep_nan(v, lo, hi);
    Storage<T>::store(out + k, v);
  }
}

template <typename T, bool kGuided, bool kNoise, bool kClamp>
static void langevin_range_impl(const LangevinArgs& args, int64_t begin, int64_t end) {
  using Acc = typename Storage<T>::acc;
  const T* x = static_cast<const T*>(args.x);
  const T* score = static_cast<const T*>(args.score);
  const T* score_cond = static_cast<const T*>(args.score_cond);
  T* out = static_cast<T*>(args.out);
  const Acc* step_pp = static_cast<const Acc*>(args.step_size_per_particle);
  const Acc* noise_pp = static_cast<const Acc*>(args.noise_scale_per_particle);
  const Acc* factor_pp = static_cast<const Acc*>(args.score_factor);
  const Acc a = static_cast<Acc>(args.step_size);
  const Acc b = static_cast<Acc>(args.noise_scale);
  const Acc w = static_cast<Acc>(args.guidance);
  const Acc lo = static_cast<Acc>(args.clamp_min);
  const Acc hi = static_cast<Acc>(args.clamp_max);
  const int64_t D = args.particle_size;
  const bool uniform = scorefast::uniform_coefficients(args);

  alignas(64) float z_f32[kTile];
  alignas(64) float result[std::is_same<T, float>::value ? kTile : 1];
  // Large out-of-place float32 results bypass the cache: they are not read again here.
  const bool stream = std::is_same<T, float>::value && args.out != args.x &&
                      args.num_particles * args.particle_size >= (int64_t{1} << 20);
  alignas(64) Acc z_acc[sizeof(Acc) == sizeof(float) ? 1 : kTile];
  for (int64_t t0 = begin; t0 < end; t0 += kTile) {
    const int64_t n = end - t0 < kTile ? end - t0 : kTile;
    const Acc* z = nullptr;
    if (kNoise) {
      Acc* z_dst = sizeof(Acc) == sizeof(float) ? reinterpret_cast<Acc*>(z_f32) : z_acc;
      if (args.noise != nullptr) {
        for (int64_t i = 0; i < n; ++i) {
          z_dst[i] = scorefast::load_as<Acc>(args.noise, args.noise_dtype, t0 + i);
        }
      } else {
        fill_normals(z_f32, D, args.seed, args.step, args.particle_offset, t0, n);
        if (sizeof(Acc) != sizeof(float)) {
          for (int64_t i = 0; i < n; ++i) z_dst[i] = static_cast<Acc>(z_f32[i]);
        }
      }
      z = z_dst;
    }
    if (uniform) {
      if constexpr (std::is_same<T, float>::value) {
        if (stream) {  // result into the L1 tile, then straight to memory (no read for ownership)
          update_run<T, kGuided, kNoise, kClamp>(x + t0, score + t0, score_cond + (kGuided ? t0 : 0), z,
                                                 result, n, a, b, w, lo, hi);
          stream_store(out + t0, result, n);
          continue;
        }
      }
      update_run<T, kGuided, kNoise, kClamp>(x + t0, score + t0, score_cond + (kGuided ? t0 : 0), z,
                                             out + t0, n, a, b, w, lo, hi);
      continue;
    }
    // Per-particle coefficients: one run per particle segment of the tile.
    int64_t p = t0 / D;
    int64_t d = t0 - p * D;
    for (int64_t i = 0; i < n; d = 0, ++p) {
      const int64_t len = n - i < D - d ? n - i : D - d;
      Acc a_p = step_pp ? step_pp[p] : a;
      if (factor_pp) a_p = a_p * factor_pp[p];
      const Acc b_p = noise_pp ? noise_pp[p] : b;
      const int64_t e = t0 + i;
      update_run<T, kGuided, kNoise, kClamp>(x + e, score + e, score_cond + (kGuided ? e : 0),
                                             kNoise ? z + i : nullptr, out + e, len, a_p, b_p, w,
                                             lo, hi);
      i += len;
    }
  }
}

template <typename T>
static void langevin_range_typed(const LangevinArgs& args, int64_t begin, int64_t end) {
  const bool guided = args.score_cond != nullptr;
  const bool noise = scorefast::needs_noise(args);
  const bool clamp = args.has_clamp;
#define SF_LANGEVIN_CASE(G, N, C) \
  if (guided == G && noise == N && clamp == C) return langevin_range_impl<T, G, N, C>(args, begin, end);
  SF_LANGEVIN_CASE(false, true, false)
  SF_LANGEVIN_CASE(false, true, true)
  SF_LANGEVIN_CASE(true, true, false)
  SF_LANGEVIN_CASE(true, true, true)
  SF_LANGEVIN_CASE(false, false, false)
  SF_LANGEVIN_CASE(false, false, true)
  SF_LANGEVIN_CASE(true, false, false)
  SF_LANGEVIN_CASE(true, false, true)
#undef SF_LANGEVIN_CASE
}

template <typename T>
static void clip_factors_typed(const LangevinArgs& args, double max_norm, void* factors,
                               int64_t begin, int64_t end) {
  using Acc = typename Storage<T>::acc;
  const T* score = static_cast<const T*>(args.score);
  const T* score_cond = static_cast<const T*>(args.score_cond);
  const Acc w = static_cast<Acc>(args.guidance);
  const int64_t D = args.particle_size;
  Acc* out = static_cast<Acc*>(factors);
  for (int64_t p = begin; p < end; ++p) {
    double sum_sq = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      const int64_t e = p * D + d;
      Acc g = Storage<T>::load(score + e);
      if (score_cond) g = g + w * (Storage<T>::load(score_cond + e) - g);
      sum_sq += static_cast<double>(g) * static_cast<double>(g);
    }
    const double norm = std::sqrt(sum_sq);
    // A NaN norm gives a NaN factor: the whole particle's update is undefined.
    out[p] = static_cast<Acc>(!(norm <= max_norm) ? max_norm / norm : 1.0);
  }
}

}  // namespace langevin_detail

static void langevin_range(const scorefast::LangevinArgs& args, int64_t begin, int64_t end) {
  using scorefast::StorageType;
  switch (args.dtype) {
    case StorageType::kFloat32:
      langevin_detail::langevin_range_typed<float>(args, begin, end);
      stream_fence();  // order streamed stores before the threads join
      return;
    case StorageType::kFloat64:
      return langevin_detail::langevin_range_typed<double>(args, begin, end);
    case StorageType::kFloat16:
      return langevin_detail::langevin_range_typed<scorefast::f16_t>(args, begin, end);
    case StorageType::kBFloat16:
      return langevin_detail::langevin_range_typed<scorefast::bf16_t>(args, begin, end);
  }
}

static void score_clip_factors_range(const scorefast::LangevinArgs& args, double max_norm,
                                     void* factors, int64_t begin, int64_t end) {
  using scorefast::StorageType;
  switch (args.dtype) {
    case StorageType::kFloat32:
      return langevin_detail::clip_factors_typed<float>(args, max_norm, factors, begin, end);
    case StorageType::kFloat64:
      return langevin_detail::clip_factors_typed<double>(args, max_norm, factors, begin, end);
    case StorageType::kFloat16:
      return langevin_detail::clip_factors_typed<scorefast::f16_t>(args, max_norm, factors, begin, end);
    case StorageType::kBFloat16:
      return langevin_detail::clip_factors_typed<scorefast::bf16_t>(args, max_norm, factors, begin, end);
  }
}
