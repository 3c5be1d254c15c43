// AVX2/FMA noise fill: the contract's normals for 8 Philox groups per vector.
//
// Lane i of a vector holds group i (one Philox call -> 4 normals). Philox's 32x32->64
// products use _mm256_mul_epu32 on even and odd lanes (mullo_epi32 is slow on many x86
// cores). log, sin and cos are Cephes' single-precision polynomials (~1 ulp on the
// ranges used: u1 in [1e-7, 1), theta in [0, 2pi)), so the normals match the scalar
// libm path to the contract's tolerance; Philox words and uniforms are bit-exact.
// Included inside namespace avx2 by isa_avx2.cpp after noise_kernels.h.
#pragma once

#include "noise_avx512.h"  // 16-lane versions, where the build enables AVX-512

namespace noise_avx2 {

struct RoundKeys {
  __m256i k0[scorefast::kPhiloxRounds];
  __m256i k1[scorefast::kPhiloxRounds];
  explicit RoundKeys(uint64_t seed) {
    uint32_t a = static_cast<uint32_t>(seed), b = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < scorefast::kPhiloxRounds; ++r) {
      k0[r] = _mm256_set1_epi32(static_cast<int>(a));
      k1[r] = _mm256_set1_epi32(static_cast<int>(b));
      a += scorefast::kPhiloxKeyA;
      b += scorefast::kPhiloxKeyB;
    }
  }
};

// (hi, lo) of m * x per 32-bit lane.
static inline void mulhilo(__m256i m, __m256i x, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(x, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// K independent vectors at once: the products' latency hides behind each other.
template <int K>
static inline void philox(const RoundKeys& keys, __m256i (&c0)[K], __m256i (&c1)[K],
                          __m256i (&c2)[K], __m256i (&c3)[K]) {
  const __m256i ma = _mm256_set1_epi32(static_cast<int>(scorefast::kPhiloxRoundA));
  const __m256i mb = _mm256_set1_epi32(static_cast<int>(scorefast::kPhiloxRoundB));
  for (int r = 0; r < scorefast::kPhiloxRounds; ++r) {
    for (int k = 0; k < K; ++k) {
      __m256i hi_b, lo_b, hi_a, lo_a;
      mulhilo(mb, c2[k], hi_b, lo_b);
      mulhilo(ma, c0[k], hi_a, lo_a);
      c0[k] = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1[k]), keys.k0[r]);
      c2[k] = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3[k]), keys.k1[r]);
      c1[k] = lo_b;
      c3[k] = lo_a;
    }
  }
}

// uint32 -> uniform, bit-exact with uint32_to_uniform: int32 bits, negatives folded by ~x.
static inline __m256 uniform(__m256i w) {
  const __m256i folded = _mm256_xor_si256(w, _mm256_srai_epi32(w, 31));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(folded), _mm256_set1_ps(scorefast::kUint32ToUniformScale));
}

// Natural log for x in [1e-7, 1) (positive normal floats): Cephes logf.
static inline __m256 log_ps(__m256 x) {
  const __m256i xi = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(xi, 23), _mm256_set1_epi32(126)));
  // mantissa in [0.5, 1)
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(xi, _mm256_set1_epi32(0x807FFFFF)),
                                                 _mm256_set1_epi32(0x3F000000)));
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_sub_ps(e, _mm256_and_ps(small, _mm256_set1_ps(1.0f)));
  // m < sqrt(1/2): use 2m - 1 (exact), else m - 1 (exact)
  m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), _mm256_set1_ps(1.0f));
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 y = _mm256_set1_ps(7.0376836292e-2f);
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.1514610310e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.1676998740e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.2420140846e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.4249322787e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.6668057665e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(2.0000714765e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-2.4999993993e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(3.3333331174e-1f));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(m, y));
}

// sin and cos for x in [0, 2pi]: Cephes sinf/cosf with octant reduction (as sse_mathfun).
static inline void sincos_ps(__m256 x, __m256& s, __m256& c) {
  __m256i j = _mm256_cvttps_epi32(_mm256_mul_ps(x, _mm256_set1_ps(1.27323954473516f)));  // 4/pi
  j = _mm256_and_si256(_mm256_add_epi32(j, _mm256_set1_epi32(1)), _mm256_set1_epi32(~1));
  const __m256 y = _mm256_cvtepi32_ps(j);
  const __m256 sign_sin = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(j, _mm256_set1_epi32(4)), 29));
  const __m256 sign_cos = _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_andnot_si256(_mm256_sub_epi32(j, _mm256_set1_epi32(2)), _mm256_set1_epi32(4)), 29));
  const __m256 use_sin_poly = _mm256_castsi256_ps(
      _mm256_cmpeq_epi32(_mm256_and_si256(j, _mm256_set1_epi32(2)), _mm256_setzero_si256()));
  // Cody-Waite: pi/4 in three parts, the first two exact in products with small y.
  x = _mm256_fnmadd_ps(y, _mm256_set1_ps(0.78515625f), x);
  x = _mm256_fnmadd_ps(y, _mm256_set1_ps(2.4187564849853515625e-4f), x);
  x = _mm256_fnmadd_ps(y, _mm256_set1_ps(3.77489497744594108e-8f), x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 pc = _mm256_set1_ps(2.443315711809948e-5f);
  pc = _mm256_fmadd_ps(pc, z, _mm256_set1_ps(-1.388731625493765e-3f));
  pc = _mm256_fmadd_ps(pc, z, _mm256_set1_ps(4.166664568298827e-2f));
  pc = _mm256_mul_ps(_mm256_mul_ps(pc, z), z);
  pc = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), pc);
  pc = _mm256_add_ps(pc, _mm256_set1_ps(1.0f));
  __m256 ps = _mm256_set1_ps(-1.9515295891e-4f);
  ps = _mm256_fmadd_ps(ps, z, _mm256_set1_ps(8.3321608736e-3f));
  ps = _mm256_fmadd_ps(ps, z, _mm256_set1_ps(-1.6666654611e-1f));
  ps = _mm256_fmadd_ps(_mm256_mul_ps(ps, z), x, x);
  s = _mm256_xor_ps(_mm256_blendv_ps(pc, ps, use_sin_poly), sign_sin);
  c = _mm256_xor_ps(_mm256_blendv_ps(ps, pc, use_sin_poly), sign_cos);
}

// (r cos th, r sin th) of two word vectors, as scorefast::box_muller per lane.
static inline void box_muller(__m256i wa, __m256i wb, __m256& zc, __m256& zs) {
  const __m256 u1 = _mm256_max_ps(uniform(wa), _mm256_set1_ps(scorefast::kMinUniform));
  const __m256 theta = _mm256_mul_ps(_mm256_set1_ps(scorefast::kTwoPi), uniform(wb));
  const __m256 r = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), log_ps(u1)));
  __m256 s, c;
  sincos_ps(theta, s, c);
  zc = _mm256_mul_ps(r, c);
  zs = _mm256_mul_ps(r, s);
}

// Store the 4 normals of each of 8 groups (z[j] lane i = normal j of group i) as 32
// consecutive floats, group-major.
static inline void store_groups(float* out, __m256 z0, __m256 z1, __m256 z2, __m256 z3) {
  const __m256 t0 = _mm256_unpacklo_ps(z0, z1), t1 = _mm256_unpackhi_ps(z0, z1);
  const __m256 t2 = _mm256_unpacklo_ps(z2, z3), t3 = _mm256_unpackhi_ps(z2, z3);
  const __m256 g04 = _mm256_shuffle_ps(t0, t2, 0x44), g15 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 g26 = _mm256_shuffle_ps(t1, t3, 0x44), g37 = _mm256_shuffle_ps(t1, t3, 0xEE);
  _mm256_storeu_ps(out + 0, _mm256_permute2f128_ps(g04, g15, 0x20));
  _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(g26, g37, 0x20));
  _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(g04, g15, 0x31));
  _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(g26, g37, 0x31));
}

// 8K consecutive groups q0, q0+1, ... of one particle -> 32K floats at out.
template <int K>
static inline void row_groups(const RoundKeys& keys, uint64_t particle, uint32_t step, uint32_t q0,
                              float* out) {
  __m256i c0[K], c1[K], c2[K], c3[K];
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int k = 0; k < K; ++k) {
    c0[k] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(particle)));
    c1[k] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(particle >> 32)));
    c2[k] = _mm256_set1_epi32(static_cast<int>(step));
    c3[k] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(q0 + 8u * k)), lanes);
  }
  philox<K>(keys, c0, c1, c2, c3);
  for (int k = 0; k < K; ++k) {
    __m256 z0, z1, z2, z3;
    box_muller(c0[k], c1[k], z0, z1);
    box_muller(c2[k], c3[k], z2, z3);
    store_groups(out + 32 * k, z0, z1, z2, z3);
  }
}

// Whole particles of D <= 4 elements (one Philox group each), 8K particles at a time:
// lane i of vector k is particle first + 8k + i. D <= 2 needs only the first Box-Muller pair.
// The Philox words of group 0 of particles first .. first + 8K - 1 (lane i of vector k:
// particle first + 8k + i).
template <int K>
static inline void particle_words(const RoundKeys& keys, uint64_t first, uint32_t step, __m256i (&c0)[K],
                                  __m256i (&c1)[K], __m256i (&c2)[K], __m256i (&c3)[K]) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  for (int k = 0; k < K; ++k) {
    const uint64_t base = first + 8u * static_cast<uint64_t>(k);
    const __m256i lo = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base))), lanes);
    // lo wrapped past 2^32 exactly where lo < lane (unsigned): carry into the high word
    const __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(lanes, sign), _mm256_xor_si256(lo, sign));
    c0[k] = lo;
    c1[k] = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32))), carry);
    c2[k] = _mm256_set1_epi32(static_cast<int>(step));
    c3[k] = _mm256_setzero_si256();
  }
  philox<K>(keys, c0, c1, c2, c3);
}

template <int K, int D>
static inline void small_particles(const RoundKeys& keys, uint64_t first, uint32_t step, float* out) {
  __m256i c0[K], c1[K], c2[K], c3[K];
  particle_words<K>(keys, first, step, c0, c1, c2, c3);
  for (int k = 0; k < K; ++k) {
    float* o = out + 8 * D * k;
    __m256 z0, z1;
    box_muller(c0[k], c1[k], z0, z1);
    if (D == 1) {
      _mm256_storeu_ps(o, z0);
    } else if (D == 2) {
      const __m256 lo = _mm256_unpacklo_ps(z0, z1), hi = _mm256_unpackhi_ps(z0, z1);
      _mm256_storeu_ps(o, _mm256_permute2f128_ps(lo, hi, 0x20));
      _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    } else {
      __m256 z2, z3;
      box_muller(c2[k], c3[k], z2, z3);
      if (D == 4) {
        store_groups(o, z0, z1, z2, z3);
      } else {
        alignas(32) float z[32];
        store_groups(z, z0, z1, z2, z3);
        for (int i = 0; i < 8; ++i)
          for (int j = 0; j < D; ++j) o[D * i + j] = z[4 * i + j];
      }
    }
  }
}

// keys16: the 16-lane key schedule (AVX-512 builds), unused otherwise.
template <int D, typename Keys16>
static inline int64_t small_run(const RoundKeys& keys, const Keys16& keys16, uint64_t first, uint32_t step,
                                float* out, int64_t particles) {
  int64_t p = 0;
#if defined(SCOREFAST_NOISE16)
  for (; particles - p >= 32; p += 32) noise_avx512::small_particles<2, D>(keys16, first + p, step, out + D * p);
  for (; particles - p >= 16; p += 16) noise_avx512::small_particles<1, D>(keys16, first + p, step, out + D * p);
#else
  (void)keys16;
#endif
  for (; particles - p >= 16; p += 16) small_particles<2, D>(keys, first + p, step, out + D * p);
  for (; particles - p >= 8; p += 8) small_particles<1, D>(keys, first + p, step, out + D * p);
  return p;
}

// Groups from anywhere (different particles, partial groups): gathered 8 at a time.
struct GroupBatch {
  alignas(32) uint32_t c0[8], c1[8], c3[8];
  float* dst[8];
  int first[8], count[8];
  int size = 0;
};

static inline void flush(const RoundKeys& keys, uint32_t step, GroupBatch& b) {
  if (b.size == 0) return;
  __m256i c0[1] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(b.c0))};
  __m256i c1[1] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(b.c1))};
  __m256i c2[1] = {_mm256_set1_epi32(static_cast<int>(step))};
  __m256i c3[1] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(b.c3))};
  philox<1>(keys, c0, c1, c2, c3);
  __m256 z0, z1, z2, z3;
  box_muller(c0[0], c1[0], z0, z1);
  box_muller(c2[0], c3[0], z2, z3);
  alignas(32) float z[32];
  store_groups(z, z0, z1, z2, z3);
  for (int i = 0; i < b.size; ++i) {
    for (int j = 0; j < b.count[i]; ++j) b.dst[i][j] = z[4 * i + b.first[i] + j];
  }
  b.size = 0;
}

static inline void add_group(const RoundKeys& keys, uint32_t step, GroupBatch& b, uint64_t particle,
                             uint32_t group, int first, int count, float* dst) {
  const int i = b.size;
  b.c0[i] = static_cast<uint32_t>(particle);
  b.c1[i] = static_cast<uint32_t>(particle >> 32);
  b.c3[i] = group;
  b.first[i] = first;
  b.count[i] = count;
  b.dst[i] = dst;
  if (++b.size == 8) flush(keys, step, b);
}

}  // namespace noise_avx2

static void fill_normals(float* dst, int64_t D, uint64_t seed, uint32_t step,
                         uint64_t particle_offset, int64_t begin, int64_t n) {
  using namespace noise_avx2;
  const RoundKeys keys(seed);
#if defined(SCOREFAST_NOISE16)
  const noise_avx512::RoundKeys keys16(keys);
#else
  const int keys16 = 0;  // no 16-lane path in this build
#endif
  GroupBatch batch;
  int64_t p = begin / D;
  int64_t d = begin - p * D;
  int64_t i = 0;
  while (i < n) {
    if (D <= 4 && d == 0 && n - i >= 8 * D) {  // runs of whole small particles, vectorised across particles
      const uint64_t first = particle_offset + static_cast<uint64_t>(p);
      const int64_t whole = (n - i) / D;
      int64_t done = 0;
      switch (D) {
        case 1: done = small_run<1>(keys, keys16, first, step, dst + i, whole); break;
        case 2: done = small_run<2>(keys, keys16, first, step, dst + i, whole); break;
        case 3: done = small_run<3>(keys, keys16, first, step, dst + i, whole); break;
        default: done = small_run<4>(keys, keys16, first, step, dst + i, whole); break;
      }
      p += done;
      i += done * D;
      if (i >= n) break;
    }
    const int64_t len = n - i < D - d ? n - i : D - d;  // elements of particle p here
    const uint64_t particle = particle_offset + static_cast<uint64_t>(p);
    int64_t e = d, stop = d + len;
    float* out = dst + i - d;  // out[e] is element e of this particle
    // Leading partial group.
    if (e & 3) {
      const int64_t group_end = ((e >> 2) + 1) << 2;
      const int64_t m = (group_end < stop ? group_end : stop) - e;
      add_group(keys, step, batch, particle, static_cast<uint32_t>(e >> 2), static_cast<int>(e & 3),
                static_cast<int>(m), out + e);
      e += m;
    }
    // Whole groups straight from vectors: 32, 16 or 8 at a time.
#if defined(SCOREFAST_NOISE16)
    for (; stop - e >= 128; e += 128)
      noise_avx512::row_groups<2>(keys16, particle, step, static_cast<uint32_t>(e >> 2), out + e);
#endif
    for (; stop - e >= 64; e += 64) row_groups<2>(keys, particle, step, static_cast<uint32_t>(e >> 2), out + e);
    for (; stop - e >= 32; e += 32) row_groups<1>(keys, particle, step, static_cast<uint32_t>(e >> 2), out + e);
    // The rest (fewer than 8 groups, or a short particle) through the batch.
    for (; e < stop; e += 4) {
      const int m = static_cast<int>(stop - e < 4 ? stop - e : 4);
      add_group(keys, step, batch, particle, static_cast<uint32_t>(e >> 2), 0, m, out + e);
    }
    i += len;
    d = 0;
    ++p;
  }
  flush(keys, step, batch);
}

// Non-temporal stores of a tile (dst 32-byte aligned: every tile of a fresh output is),
// plain stores otherwise.
static inline void stream_store(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  if ((reinterpret_cast<uintptr_t>(dst) & 31) == 0) {
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
  }
  for (; i < n; ++i) dst[i] = src[i];
}

static inline void stream_fence() { _mm_sfence(); }

// The key schedule of a chain's noise, built once per range of particles.
struct ChainNoise {
  noise_avx2::RoundKeys keys;
#if defined(SCOREFAST_NOISE16)
  noise_avx512::RoundKeys keys16;
  explicit ChainNoise(uint64_t seed) : keys(seed), keys16(keys) {}
#else
  explicit ChainNoise(uint64_t seed) : keys(seed) {}
#endif
};

// Particles per vector of the chain kernels (chain_kernels.h): 16 with AVX-512.
#if defined(SCOREFAST_NOISE16)
constexpr int kChainLanes = 16;
#else
constexpr int kChainLanes = 8;
#endif

// The normals of G * kChainLanes whole particles of D <= 4 elements (ids first ..), planar:
// element d of particle first + L g + i (L = kChainLanes) at out[(g * D + d) * L + i], so a
// chain loads them as vectors.
template <int D, int G>
static inline void normals_planar(const ChainNoise& n, uint64_t first, uint32_t step, float* out) {
#if defined(SCOREFAST_NOISE16)
  __m512i w0[G], w1[G], w2[G], w3[G];
  noise_avx512::particle_words<G>(n.keys16, first, step, w0, w1, w2, w3);
  for (int g = 0; g < G; ++g) {
    __m512 z[4];
    noise_avx512::box_muller(w0[g], w1[g], z[0], z[1]);
    if (D > 2) noise_avx512::box_muller(w2[g], w3[g], z[2], z[3]);
    for (int d = 0; d < D; ++d) _mm512_store_ps(out + (g * D + d) * 16, z[d]);
  }
#else
  __m256i c0[G], c1[G], c2[G], c3[G];
  noise_avx2::particle_words<G>(n.keys, first, step, c0, c1, c2, c3);
  for (int g = 0; g < G; ++g) {
    __m256 z[4];
    noise_avx2::box_muller(c0[g], c1[g], z[0], z[1]);
    if (D > 2) noise_avx2::box_muller(c2[g], c3[g], z[2], z[3]);
    for (int d = 0; d < D; ++d) _mm256_store_ps(out + (g * D + d) * 8, z[d]);
  }
#endif
}
