// AVX-512 noise: the AVX2 path's algorithms (noise_avx2.h) on 16 Philox groups per vector.
// Same operations in the same order, so the words are bit-exact and the normals equal the
// AVX2 ones; three-input XOR and mask blends save instructions in each Philox round.
// Included inside the ISA namespace by noise_avx2.h; empty unless the build enables AVX-512
// (isa_avx512.cpp defines SCOREFAST_ISA_AVX512: g++ does not define __AVX512F__ for a
// target pragma).
#pragma once

#if defined(SCOREFAST_ISA_AVX512)
#define SCOREFAST_NOISE16 1

namespace noise_avx512 {

// The round keys, broadcast from the 8-lane schedule (any type with k0[r], k1[r] __m256i).
struct RoundKeys {
  __m512i k0[scorefast::kPhiloxRounds];
  __m512i k1[scorefast::kPhiloxRounds];
  template <typename Keys8>
  explicit RoundKeys(const Keys8& keys) {
    for (int r = 0; r < scorefast::kPhiloxRounds; ++r) {
      k0[r] = _mm512_broadcast_i64x4(keys.k0[r]);
      k1[r] = _mm512_broadcast_i64x4(keys.k1[r]);
    }
  }
};

constexpr __mmask16 kOddLanes = 0xAAAA;

static inline void mulhilo(__m512i m, __m512i x, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(x, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
  lo = _mm512_mask_blend_epi32(kOddLanes, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(kOddLanes, _mm512_srli_epi64(even, 32), odd);
}

template <int K>
static inline void philox(const RoundKeys& keys, __m512i (&c0)[K], __m512i (&c1)[K], __m512i (&c2)[K],
                          __m512i (&c3)[K]) {
  const __m512i ma = _mm512_set1_epi32(static_cast<int>(scorefast::kPhiloxRoundA));
  const __m512i mb = _mm512_set1_epi32(static_cast<int>(scorefast::kPhiloxRoundB));
  for (int r = 0; r < scorefast::kPhiloxRounds; ++r) {
    for (int k = 0; k < K; ++k) {
      __m512i hi_b, lo_b, hi_a, lo_a;
      mulhilo(mb, c2[k], hi_b, lo_b);
      mulhilo(ma, c0[k], hi_a, lo_a);
      c0[k] = _mm512_ternarylogic_epi32(hi_b, c1[k], keys.k0[r], 0x96);  // a ^ b ^ c
      c2[k] = _mm512_ternarylogic_epi32(hi_a, c3[k], keys.k1[r], 0x96);
      c1[k] = lo_b;
      c3[k] = lo_a;
    }
  }
}

static inline __m512 uniform(__m512i w) {
  const __m512i folded = _mm512_xor_si512(w, _mm512_srai_epi32(w, 31));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(folded), _mm512_set1_ps(scorefast::kUint32ToUniformScale));
}

static inline __m512 log_ps(__m512 x) {
  const __m512i xi = _mm512_castps_si512(x);
  __m512 e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(xi, 23), _mm512_set1_epi32(126)));
  __m512 m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(xi, _mm512_set1_epi32(0x807FFFFF)),
                                                 _mm512_set1_epi32(0x3F000000)));
  const __mmask16 small = _mm512_cmp_ps_mask(m, _mm512_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm512_mask_sub_ps(e, small, e, _mm512_set1_ps(1.0f));
  m = _mm512_sub_ps(_mm512_mask_add_ps(m, small, m, m), _mm512_set1_ps(1.0f));
  const __m512 z = _mm512_mul_ps(m, m);
  __m512 y = _mm512_set1_ps(7.0376836292e-2f);
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-1.1514610310e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(1.1676998740e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-1.2420140846e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(1.4249322787e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-1.6668057665e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(2.0000714765e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-2.4999993993e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(3.3333331174e-1f));
  y = _mm512_mul_ps(_mm512_mul_ps(y, m), z);
  y = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), y);
  y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
  return _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), _mm512_add_ps(m, y));
}

static inline void sincos_ps(__m512 x, __m512& s, __m512& c) {
  __m512i j = _mm512_cvttps_epi32(_mm512_mul_ps(x, _mm512_set1_ps(1.27323954473516f)));  // 4/pi
  j = _mm512_and_si512(_mm512_add_epi32(j, _mm512_set1_epi32(1)), _mm512_set1_epi32(~1));
  const __m512 y = _mm512_cvtepi32_ps(j);
  const __m512 sign_sin = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_and_si512(j, _mm512_set1_epi32(4)), 29));
  const __m512 sign_cos = _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_andnot_si512(_mm512_sub_epi32(j, _mm512_set1_epi32(2)), _mm512_set1_epi32(4)), 29));
  const __mmask16 use_sin_poly =
      _mm512_cmpeq_epi32_mask(_mm512_and_si512(j, _mm512_set1_epi32(2)), _mm512_setzero_si512());
  x = _mm512_fnmadd_ps(y, _mm512_set1_ps(0.78515625f), x);
  x = _mm512_fnmadd_ps(y, _mm512_set1_ps(2.4187564849853515625e-4f), x);
  x = _mm512_fnmadd_ps(y, _mm512_set1_ps(3.77489497744594108e-8f), x);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 pc = _mm512_set1_ps(2.443315711809948e-5f);
  pc = _mm512_fmadd_ps(pc, z, _mm512_set1_ps(-1.388731625493765e-3f));
  pc = _mm512_fmadd_ps(pc, z, _mm512_set1_ps(4.166664568298827e-2f));
  pc = _mm512_mul_ps(_mm512_mul_ps(pc, z), z);
  pc = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), pc);
  pc = _mm512_add_ps(pc, _mm512_set1_ps(1.0f));
  __m512 ps = _mm512_set1_ps(-1.9515295891e-4f);
  ps = _mm512_fmadd_ps(ps, z, _mm512_set1_ps(8.3321608736e-3f));
  ps = _mm512_fmadd_ps(ps, z, _mm512_set1_ps(-1.6666654611e-1f));
  ps = _mm512_fmadd_ps(_mm512_mul_ps(ps, z), x, x);
  s = _mm512_xor_ps(_mm512_mask_blend_ps(use_sin_poly, pc, ps), sign_sin);
  c = _mm512_xor_ps(_mm512_mask_blend_ps(use_sin_poly, ps, pc), sign_cos);
}

static inline void box_muller(__m512i wa, __m512i wb, __m512& zc, __m512& zs) {
  const __m512 u1 = _mm512_max_ps(uniform(wa), _mm512_set1_ps(scorefast::kMinUniform));
  const __m512 theta = _mm512_mul_ps(_mm512_set1_ps(scorefast::kTwoPi), uniform(wb));
  const __m512 r = _mm512_sqrt_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), log_ps(u1)));
  __m512 s, c;
  sincos_ps(theta, s, c);
  zc = _mm512_mul_ps(r, c);
  zs = _mm512_mul_ps(r, s);
}

// The 4 normals of each of 16 groups (z[j] lane i = normal j of group i) as 64 consecutive
// floats, group-major: the AVX2 4x4 transpose within each 128-bit block, then the blocks
// reordered across the four vectors.
static inline void store_groups(float* out, __m512 z0, __m512 z1, __m512 z2, __m512 z3) {
  const __m512 t0 = _mm512_unpacklo_ps(z0, z1), t1 = _mm512_unpackhi_ps(z0, z1);
  const __m512 t2 = _mm512_unpacklo_ps(z2, z3), t3 = _mm512_unpackhi_ps(z2, z3);
  // block b of g_r holds group 4b + r
  const __m512 g0 = _mm512_shuffle_ps(t0, t2, 0x44), g1 = _mm512_shuffle_ps(t0, t2, 0xEE);
  const __m512 g2 = _mm512_shuffle_ps(t1, t3, 0x44), g3 = _mm512_shuffle_ps(t1, t3, 0xEE);
  const __m512 a = _mm512_shuffle_f32x4(g0, g1, 0x44), b = _mm512_shuffle_f32x4(g2, g3, 0x44);  // 0 4 1 5 | 2 6 3 7
  const __m512 c = _mm512_shuffle_f32x4(g0, g1, 0xEE), d = _mm512_shuffle_f32x4(g2, g3, 0xEE);  // 8 12 9 13 | 10 14 11 15
  _mm512_storeu_ps(out + 0, _mm512_shuffle_f32x4(a, b, 0x88));
  _mm512_storeu_ps(out + 16, _mm512_shuffle_f32x4(a, b, 0xDD));
  _mm512_storeu_ps(out + 32, _mm512_shuffle_f32x4(c, d, 0x88));
  _mm512_storeu_ps(out + 48, _mm512_shuffle_f32x4(c, d, 0xDD));
}

// 16K consecutive groups q0, q0+1, ... of one particle -> 64K floats at out.
template <int K>
static inline void row_groups(const RoundKeys& keys, uint64_t particle, uint32_t step, uint32_t q0, float* out) {
  __m512i c0[K], c1[K], c2[K], c3[K];
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int k = 0; k < K; ++k) {
    c0[k] = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(particle)));
    c1[k] = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(particle >> 32)));
    c2[k] = _mm512_set1_epi32(static_cast<int>(step));
    c3[k] = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(q0 + 16u * k)), lanes);
  }
  philox<K>(keys, c0, c1, c2, c3);
  for (int k = 0; k < K; ++k) {
    __m512 z0, z1, z2, z3;
    box_muller(c0[k], c1[k], z0, z1);
    box_muller(c2[k], c3[k], z2, z3);
    store_groups(out + 64 * k, z0, z1, z2, z3);
  }
}

// The words of group 0 of particles first .. first + 16K - 1 (lane i of vector k: particle
// first + 16k + i), the carry into the high word as in the AVX2 path.
template <int K>
static inline void particle_words(const RoundKeys& keys, uint64_t first, uint32_t step, __m512i (&c0)[K],
                                  __m512i (&c1)[K], __m512i (&c2)[K], __m512i (&c3)[K]) {
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int k = 0; k < K; ++k) {
    const uint64_t base = first + 16u * static_cast<uint64_t>(k);
    const __m512i lo = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(base))), lanes);
    const __mmask16 carry = _mm512_cmplt_epu32_mask(lo, lanes);  // lo wrapped past 2^32
    const __m512i hi = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32)));
    c0[k] = lo;
    c1[k] = _mm512_mask_add_epi32(hi, carry, hi, _mm512_set1_epi32(1));
    c2[k] = _mm512_set1_epi32(static_cast<int>(step));
    c3[k] = _mm512_setzero_si512();
  }
  philox<K>(keys, c0, c1, c2, c3);
}

// Whole particles of D <= 4 elements, 16K at a time, written particle-major (as the AVX2
// small_particles).
template <int K, int D>
static inline void small_particles(const RoundKeys& keys, uint64_t first, uint32_t step, float* out) {
  __m512i c0[K], c1[K], c2[K], c3[K];
  particle_words<K>(keys, first, step, c0, c1, c2, c3);
  for (int k = 0; k < K; ++k) {
    float* o = out + 16 * D * k;
    __m512 z[4];
    box_muller(c0[k], c1[k], z[0], z[1]);
    if (D == 1) {
      _mm512_storeu_ps(o, z[0]);
    } else if (D == 2) {
      // interleave (z0[i], z1[i]): unpack within 128-bit blocks, then reorder the blocks
      const __m512 lo = _mm512_unpacklo_ps(z[0], z[1]), hi = _mm512_unpackhi_ps(z[0], z[1]);
      // lo blocks: p0 p1 | p4 p5 | p8 p9 | p12 p13; hi: p2 p3 | p6 p7 | p10 p11 | p14 p15
      const __m512 a = _mm512_shuffle_f32x4(lo, hi, 0x44), b = _mm512_shuffle_f32x4(lo, hi, 0xEE);
      _mm512_storeu_ps(o, _mm512_shuffle_f32x4(a, a, 0xD8));
      _mm512_storeu_ps(o + 16, _mm512_shuffle_f32x4(b, b, 0xD8));
    } else {
      box_muller(c2[k], c3[k], z[2], z[3]);
      alignas(64) float g[64];
      store_groups(g, z[0], z[1], z[2], z[3]);
      if (D == 4) {
        for (int i = 0; i < 4; ++i) _mm512_storeu_ps(o + 16 * i, _mm512_load_ps(g + 16 * i));
      } else {
        for (int i = 0; i < 16; ++i)
          for (int j = 0; j < D; ++j) o[D * i + j] = g[4 * i + j];
      }
    }
  }
}

}  // namespace noise_avx512

#endif  // AVX-512
