// The scorefast noise contract, shared by the CPU and CUDA kernels.
//
// A tensor viewed as [P, D] gets, at sampler step t, the standard normal
//
//   z[p, d] = BoxMuller(Philox4x32-10(key = seed, counter = (lo32(g >> 2), hi32(g >> 2), t, 0)))[g & 3]
//   g = (particle_offset + p) D + d,  the flat index of the element, < 2^63
//
// (noise_site below: every tensor draws the noise of its flat [P D / 4, 4] view, so every word
// of a Philox call is used whatever D is). Counters whose last word is >= 1 are free for other
// draws: a MALA step's acceptance uniform is word 0 of counter (p', t, ceil(D / 4)).
//
// with Philox, the uint32 -> uniform map and Box-Muller exactly as Triton's
// tl.philox / uint_to_uniform_float / pair_uniform_to_normal, so every backend
// (reference, C++, CUDA, Triton, numba) draws the same numbers.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SF_HOST_DEVICE inline
#endif

namespace scorefast {

constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

// Largest float scale with INT32_MAX * scale < 1 (Triton's constant).
constexpr float kUint32ToUniformScale = 4.6566127342e-10f;
constexpr float kTwoPi = 6.283185307179586f;
constexpr float kMinUniform = 1.0e-7f;

// The step index t is one 32-bit counter word; the group word of a uniform (ceil(D / 4)) another.
constexpr uint64_t kMaxStep = 0xFFFFFFFFull;

struct PhiloxWords {
  uint32_t w0, w1, w2, w3;
};

SF_HOST_DEVICE uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Philox4x32 with 10 rounds; key = (lo32(seed), hi32(seed)).
SF_HOST_DEVICE PhiloxWords philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed) {
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < kPhiloxRounds; ++round) {
    const uint32_t old_c0 = c0;
    const uint32_t old_c2 = c2;
    c0 = mulhi32(kPhiloxRoundB, old_c2) ^ c1 ^ k0;
    c2 = mulhi32(kPhiloxRoundA, old_c0) ^ c3 ^ k1;
    c1 = kPhiloxRoundB * old_c2;
    c3 = kPhiloxRoundA * old_c0;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  return PhiloxWords{c0, c1, c2, c3};
}

// The words of counter (lo32(counter), hi32(counter), step, group).
SF_HOST_DEVICE PhiloxWords noise_words(uint64_t seed, uint64_t particle, uint32_t step, uint32_t group) {
  return philox4x32_10(static_cast<uint32_t>(particle), static_cast<uint32_t>(particle >> 32), step, group, seed);
}

// uint32 -> float in [0, 1): reinterpret as int32, fold negatives with ~x, scale.
SF_HOST_DEVICE float uint32_to_uniform(uint32_t bits) {
  int32_t i = static_cast<int32_t>(bits);
  i = i < 0 ? ~i : i;
  return static_cast<float>(i) * kUint32ToUniformScale;
}

// Box-Muller of a pair of words: (r cos th, r sin th).
SF_HOST_DEVICE void box_muller(uint32_t word_a, uint32_t word_b, float& z_cos, float& z_sin) {
  float u1 = uint32_to_uniform(word_a);
  const float u2 = uint32_to_uniform(word_b);
  u1 = u1 < kMinUniform ? kMinUniform : u1;
  const float theta = kTwoPi * u2;
  const float radius = sqrtf(-2.0f * logf(u1));
  z_cos = radius * cosf(theta);
  z_sin = radius * sinf(theta);
}

// The four normals of one Philox call, in contract order.
struct Normal4 {
  float z0, z1, z2, z3;
};

SF_HOST_DEVICE Normal4 normals_from_words(const PhiloxWords& w) {
  Normal4 n;
  box_muller(w.w0, w.w1, n.z0, n.z1);
  box_muller(w.w2, w.w3, n.z2, n.z3);
  return n;
}

SF_HOST_DEVICE float normal_component(const Normal4& n, int j) {
  return j == 0 ? n.z0 : j == 1 ? n.z1 : j == 2 ? n.z2 : n.z3;
}

// Where element d of particle p' (already offset) of a [P, D] tensor draws its normal: output
// `output` of the four of counter (lo32(counter), hi32(counter), t, group), counter = g >> 2 and
// output = g & 3 of the element's flat index g = p' D + d (the caller keeps g < 2^63).
struct NoiseSite {
  uint64_t counter;
  uint32_t group;
  int output;
};

SF_HOST_DEVICE NoiseSite noise_site(uint64_t particle, uint64_t D, uint64_t d) {
  const uint64_t g = particle * D + d;
  return NoiseSite{g >> 2, 0u, static_cast<int>(g & 3)};
}

// One element of the contract: z[p, d] of a [P, D] tensor (particle already offset).
SF_HOST_DEVICE float contract_normal(uint64_t seed, uint64_t particle, uint32_t step, uint64_t D, uint64_t d) {
  const NoiseSite site = noise_site(particle, D, d);
  const PhiloxWords w = noise_words(seed, site.counter, step, site.group);
  float zc, zs;
  if (site.output < 2) {
    box_muller(w.w0, w.w1, zc, zs);
  } else {
    box_muller(w.w2, w.w3, zc, zs);
  }
  return (site.output & 1) ? zs : zc;
}

}  // namespace scorefast
