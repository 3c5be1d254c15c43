// The noise contract as the elementwise CUDA kernels draw it: one Philox call per (particle,
// group of 4 elements), its normals for the group's elements. Torch-free; included only by
// csrc/cuda/*.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernel_common.cuh"
#include "scorefast/philox.h"

namespace scorefast {
namespace cuda {

// Work item i of a [P, num_groups] space as (particle p, group q), as split_index; kPacked
// (D <= 2): one group per particle, so p = i without a division.
template <bool kPacked>
__device__ __forceinline__ void particle_group(int64_t i, int64_t num_groups, bool index32, int64_t& p, int64_t& q) {
  if (kPacked) {
    p = i;
    q = 0;
  } else {
    split_index(i, num_groups, index32, p, q);
  }
}

// The contract's normals of elements 4q .. 4q + n - 1 (n <= 4) of particle p' (already
// offset) of a [P, D] tensor, into z[0 .. n - 1] (z[j] for j >= n is not meaningful).
// kPacked is D <= 2, known when the kernel is instantiated, so that the code of D >= 3 stays
// as it was (a runtime choice costs those kernels registers and occupancy):
// * D >= 3: outputs 0 .. n - 1 of the particle's own counter, group q; the second Box-Muller
//   pair only when the group uses it (D % 4 == 1, 2 tails use one).
// * D <= 2 (q = 0): the particle's one or two outputs start at noise_site's output of a
//   counter shared with its neighbours and lie in one pair (p' D is even for D = 2). The pair
//   is picked by selects, not branches: the particles of a warp start at different outputs.
template <bool kPacked, typename Acc>
__device__ __forceinline__ void contract_normals4(uint64_t seed, uint64_t particle, uint32_t step, int64_t D, int64_t q,
                                                  int n, Acc (&z)[4]) {
  float z0, z1, z2 = 0.f, z3 = 0.f;
  if constexpr (kPacked) {
    const NoiseSite site = noise_site(particle, static_cast<uint64_t>(D), 0);
    const PhiloxWords w = noise_words(seed, site.counter, step, site.group);
    const bool second_pair = site.output >= 2;
    float z_cos, z_sin;
    box_muller(second_pair ? w.w2 : w.w0, second_pair ? w.w3 : w.w1, z_cos, z_sin);
    z0 = (site.output & 1) ? z_sin : z_cos;
    z1 = z_sin;
  } else {
    const PhiloxWords w = noise_words(seed, particle, step, static_cast<uint32_t>(q));
    box_muller(w.w0, w.w1, z0, z1);
    if (n > 2) box_muller(w.w2, w.w3, z2, z3);
  }
  z[0] = static_cast<Acc>(z0), z[1] = static_cast<Acc>(z1);
  z[2] = static_cast<Acc>(z2), z[3] = static_cast<Acc>(z3);
}

}  // namespace cuda
}  // namespace scorefast
