// The noise contract as the CUDA kernels draw it: the normals of a group of up to 4
// consecutive elements of a particle (one thread's work item). Torch-free; included only by
// csrc/cuda/*.cu.
//
// The contract (scorefast/philox.h) gives element g = p' D + d of a tensor viewed as [P, D]
// (p' = particle_offset + p) output g & 3 of counter (lo32(g >> 2), hi32(g >> 2), t, 0): every
// tensor draws the noise of its flat [P D / 4, 4] view. A kernel names the group by the flat
// index g0 of its first element, flat_offset + e with e = p D + d the element's index in the
// tensor and flat_offset = particle_offset D (flat_offset(), formed once by the launcher), so
// no thread multiplies by D. How a group of elements 4q .. 4q + n - 1 meets the counters
// depends on D only, so the kernels fix it when they are instantiated (a runtime choice costs
// them registers and occupancy), the launcher picking it with noise_layout(D):
// * kAlignedNoise (D % 4 == 0): g0 % 4 == 0 and n == 4, the group is exactly counter g0 / 4.
// * kPackedNoise (D <= 2): one group per particle, whose one or two elements lie in one
//   Box-Muller pair (g0 = p' D is even for D = 2).
// * kGeneralNoise (any other D, and correct for every group): g0 anywhere in a counter, so the
//   group straddles at most two counters, g0 >> 2 and (g0 >> 2) + 1.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernel_common.cuh"
#include "scorefast/philox.h"

namespace scorefast {
namespace cuda {

enum NoiseLayout : int { kAlignedNoise = 0, kPackedNoise = 1, kGeneralNoise = 2 };

// The layout the kernels of a [P, D] tensor draw the contract's normals in.
__host__ __device__ constexpr NoiseLayout noise_layout(int64_t D) {
  return D % 4 == 0 ? kAlignedNoise : D <= 2 ? kPackedNoise : kGeneralNoise;
}

// f(layout) with the layout of [P, D] tensors (noise_layout(D)) as a std::integral_constant:
// the launchers' run-time choice to a kernel's template argument. packed = false: for kernels
// without a packed form (they never see D <= 2, or need none), which take the general layout
// there, correct for every group.
template <typename F>
inline auto with_noise_layout(int64_t D, F&& f, bool packed = true) {
  const NoiseLayout layout = noise_layout(D);
  if (layout == kAlignedNoise) return f(std::integral_constant<int, kAlignedNoise>{});
  if (layout == kPackedNoise && packed) return f(std::integral_constant<int, kPackedNoise>{});
  return f(std::integral_constant<int, kGeneralNoise>{});
}

// The flat index of element (0, 0) of a [P, D] tensor: particle_offset D (the op keeps
// (particle_offset + P) D < 2^63).
inline uint64_t flat_offset(uint64_t particle_offset, int64_t D) { return particle_offset * static_cast<uint64_t>(D); }

// The noise term of the update kernels (langevin_kernels.cu, diffusion_kernels.cu): the
// contract's, drawn in one of the layouts above, none, or an explicit noise tensor.
enum UpdateNoise : int { kNoNoise = 3, kExplicitNoise = 4 };

__host__ __device__ constexpr bool is_contract_noise(int noise) {
  return noise == kAlignedNoise || noise == kPackedNoise || noise == kGeneralNoise;
}

// f(mode, vec) with an update kernel's noise mode (an UpdateNoise, or a NoiseLayout for the
// contract's noise) and whether it takes quads of elements, as std::integral_constants: the
// launchers' run-time choice to the kernel's template arguments. vec (D % 4 == 0) never meets
// the packed or the general layout.
template <typename F>
inline auto with_update_noise(int mode, bool vec, F&& f) {
  using std::integral_constant;
  if (vec) {
    if (mode == kAlignedNoise) return f(integral_constant<int, kAlignedNoise>{}, std::true_type{});
    if (mode == kExplicitNoise) return f(integral_constant<int, kExplicitNoise>{}, std::true_type{});
    return f(integral_constant<int, kNoNoise>{}, std::true_type{});
  }
  if (mode == kAlignedNoise) return f(integral_constant<int, kAlignedNoise>{}, std::false_type{});
  if (mode == kPackedNoise) return f(integral_constant<int, kPackedNoise>{}, std::false_type{});
  if (mode == kGeneralNoise) return f(integral_constant<int, kGeneralNoise>{}, std::false_type{});
  if (mode == kExplicitNoise) return f(integral_constant<int, kExplicitNoise>{}, std::false_type{});
  return f(integral_constant<int, kNoNoise>{}, std::false_type{});
}

// Work item i of a [P, num_groups] space as (particle p, group q), as split_index;
// kPackedNoise: one group per particle, so p = i without a division.
template <int kLayout>
__device__ __forceinline__ void particle_group(int64_t i, int64_t num_groups, bool index32, int64_t& p, int64_t& q) {
  if (kLayout == kPackedNoise) {
    p = i;
    q = 0;
  } else {
    split_index(i, num_groups, index32, p, q);
  }
}

// The contract's normals of the flat elements g0 .. g0 + n - 1 (n <= 4, one particle's group),
// into z[0 .. n - 1] (z[j] for j >= n is not meaningful), drawn in layout kLayout
// (noise_layout(D), or kGeneralNoise). Pairs of outputs are picked by selects, not branches:
// the groups of a warp start at different outputs.
template <int kLayout, typename Acc>
__device__ __forceinline__ void contract_normals4(uint64_t seed, uint64_t g0, uint32_t step, int n, Acc (&z)[4]) {
  float z0, z1, z2 = 0.f, z3 = 0.f;
  if constexpr (kLayout == kAlignedNoise) {
    const PhiloxWords w = noise_words(seed, g0 >> 2, step, 0u);
    box_muller(w.w0, w.w1, z0, z1);
    box_muller(w.w2, w.w3, z2, z3);
  } else if constexpr (kLayout == kPackedNoise) {
    const PhiloxWords w = noise_words(seed, g0 >> 2, step, 0u);
    const bool second_pair = (g0 & 2) != 0;
    float z_cos, z_sin;
    box_muller(second_pair ? w.w2 : w.w0, second_pair ? w.w3 : w.w1, z_cos, z_sin);
    z0 = (g0 & 1) ? z_sin : z_cos;
    z1 = z_sin;
  } else {
    // The elements lie in the Box-Muller pairs m0 = g0 >> 1 .. (g0 + n - 1) >> 1, at most
    // three: pair m is words 2 (m & 1), 2 (m & 1) + 1 of counter m >> 1, so the second counter
    // is drawn only when the group runs past the first (head + n > 4), and only once the first
    // one's pairs are normals (fewer registers live). From an odd g0 the elements are pair
    // m0's second output and on, from an even one its first.
    const bool odd = (g0 & 1) != 0;
    const bool high = (g0 & 2) != 0;  // pair m0 is its counter's second
    const int head = static_cast<int>(g0 & 3);
    const int pairs = (static_cast<int>(odd) + n + 1) >> 1;
    float a0, a1, b0 = 0.f, b1 = 0.f, c0 = 0.f;
    {
      const PhiloxWords w = noise_words(seed, g0 >> 2, step, 0u);
      box_muller(high ? w.w2 : w.w0, high ? w.w3 : w.w1, a0, a1);
      if (!high && pairs > 1) box_muller(w.w2, w.w3, b0, b1);
    }
    if (head + n > 4) {
      const PhiloxWords v = noise_words(seed, (g0 >> 2) + 1, step, 0u);
      if (high) box_muller(v.w0, v.w1, b0, b1);
      if (pairs > 2) {
        float c1;
        box_muller(high ? v.w2 : v.w0, high ? v.w3 : v.w1, c0, c1);
      }
    }
    z0 = odd ? a1 : a0;
    z1 = odd ? b0 : a1;
    z2 = odd ? b1 : b0;
    z3 = odd ? c0 : b1;
  }
  z[0] = static_cast<Acc>(z0), z[1] = static_cast<Acc>(z1);
  z[2] = static_cast<Acc>(z2), z[3] = static_cast<Acc>(z3);
}

}  // namespace cuda
}  // namespace scorefast
