// Portable noise fill: z of the contract for a run of flattened [P, D] elements.
// Included inside an ISA namespace by isa_*.cpp; the AVX2 build adds a vector path.
#pragma once

#include <cstdint>

#include "scorefast/philox.h"

// z for the flattened elements [begin, begin + n) of a [P, D] tensor, written to dst[0, n).
// Box-Muller runs only for the word pairs that are used (D = 1 or 2 uses one pair).
static inline void fill_normals_scalar(float* dst, int64_t D, uint64_t seed, uint32_t step,
                                       uint64_t particle_offset, int64_t begin, int64_t n) {
  int64_t p = begin / D;
  int64_t d = begin - p * D;
  int64_t cached_group = -1;
  int cached_pair = -1;
  scorefast::PhiloxWords words{};
  float pair_cos = 0.f, pair_sin = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t group = d >> 2;
    const int pair = static_cast<int>((d >> 1) & 1);
    if (group != cached_group) {
      words = scorefast::noise_words(seed, particle_offset + static_cast<uint64_t>(p), step,
                                     static_cast<uint32_t>(group));
      cached_group = group;
      cached_pair = -1;
    }
    if (pair != cached_pair) {
      if (pair == 0) {
        scorefast::box_muller(words.w0, words.w1, pair_cos, pair_sin);
      } else {
        scorefast::box_muller(words.w2, words.w3, pair_cos, pair_sin);
      }
      cached_pair = pair;
    }
    dst[i] = (d & 1) ? pair_sin : pair_cos;
    if (++d == D) {
      d = 0;
      ++p;
      cached_group = -1;
    }
  }
}

// Defined by each ISA build: the scalar loop above, or a vector version.
static void fill_normals(float* dst, int64_t D, uint64_t seed, uint32_t step,
                         uint64_t particle_offset, int64_t begin, int64_t n);

static void normal_fill_range(float* out, int64_t D, uint64_t seed, uint32_t step,
                              uint64_t particle_offset, int64_t begin, int64_t end) {
  constexpr int64_t kChunk = 4096;
  for (int64_t i = begin; i < end; i += kChunk) {
    const int64_t n = end - i < kChunk ? end - i : kChunk;
    fill_normals(out + i, D, seed, step, particle_offset, i, n);
  }
}
