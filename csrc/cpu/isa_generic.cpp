// Portable build of the CPU kernels (no instruction-set assumptions beyond the baseline).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu_kernels.h"
#include "scorefast/langevin.h"
#include "scorefast/philox.h"
#include "scorefast/storage.h"

#define SCOREFAST_ISA_NAME "generic"

namespace scorefast {
namespace cpu {
namespace generic {

#include "isa_noise_kernels.inc"

static void fill_flat_normals(float* dst, uint64_t seed, uint32_t step, uint64_t first, int64_t begin, int64_t n,
                              NoiseSideWork* side) {
  if (side != nullptr) side->rest();  // the scalar noise is slow enough to hide a burst
  fill_flat_normals_scalar(dst, seed, step, first, begin, n);
}

// The noise seed of a chain (the AVX2 build keeps its key schedule here).
struct ChainNoise {
  uint64_t seed;
  explicit ChainNoise(uint64_t s) : seed(s) {}
};

// Word 0 of group q of particles first .. first + n - 1 (the MALA acceptance uniforms).
static inline void acceptance_words(const ChainNoise& nz, uint64_t first, uint32_t step, uint32_t q, int64_t n,
                                    uint32_t* w0) {
  for (int64_t i = 0; i < n; ++i) w0[i] = noise_words(nz.seed, first + static_cast<uint64_t>(i), step, q).w0;
}

// Particles per vector of the chain kernels, and their normals planar as in the AVX2 build:
// element d of particle first + 8g + i at out[(g * D + d) * 8 + i].
constexpr int kChainLanes = 8;

template <int D, int G>
static inline void normals_planar(const ChainNoise& n, uint64_t first, uint32_t step, float* out) {
  planar_normals_from_fill<kChainLanes, D, G>(n.seed, first, step, out);
}

// Plain stores here; the AVX2 build streams large results past the cache.
static inline void stream_store(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }
static inline void stream_fence() {}

#include "isa_kernel_table.inc"

}  // namespace generic
}  // namespace cpu
}  // namespace scorefast
