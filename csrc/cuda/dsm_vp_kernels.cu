// CUDA kernels of the diffusion forward process and loss (scorefast/dsm_vp.h). The noise z of
// the contract is regenerated from (seed, step, sample) in every kernel, never stored. The
// layout is that of the DSM kernels (dsm_kernels.cu):
//
// * perturb (out = alpha_b x + sigma_b z) and backward (out = g_b (2 w_b) (pred - a_b z - c_b x)):
//   one thread per (sample, group of 4 elements), which draws the group's normals from the one
//   or two Philox calls they lie in (the layouts of contract_noise.cuh); 128-bit loads/stores
//   (64-bit for 16-bit storage) when D % 4 == 0 and the buffers are aligned, scalar otherwise;
//   grid-stride, int64 indexing.
// * loss (l_b = w_b ||pred_b - a_b z_b - c_b x_b||^2): one block per sample for large D, a team
//   of 1..32 lanes of a warp per sample for small D, reducing with shuffles (and shared memory
//   across the warps of a block). The squares are accumulated in double for every storage
//   type, and w_b (double) multiplies the sum. A NaN in a sample's inputs makes that sample's
//   loss NaN and no other.
//
// Arithmetic matches the C++ CPU kernels (csrc/cpu/isa_dsm_vp_kernels.inc) operation for
// operation, with explicitly rounded adds/multiplies (no FMA contraction). Do not build with
// -use_fast_math: the noise contract requires float32 results equal to the reference to libm
// rounding.
#include <cuda_runtime.h>

#include <cstdint>

#include "contract_noise.cuh"
#include "dsm_vp_launchers.h"
#include "kernel_common.cuh"
#include "quad_io.cuh"
#include "scorefast/dsm_vp.h"
#include "scorefast/philox.h"
#include "scorefast/storage.h"

namespace scorefast {
namespace cuda {
namespace {

struct DsmVpParams {
  const void* input;   // [B, D] storage type
  const void* data;    // [B, D] storage type, or null (no c x term)
  const void* coef_a;  // [B] acc type: alpha (perturb) or a
  const void* coef_c;  // [B] acc type: sigma (perturb) or c
  const double* weight;
  const void* grad;  // [B] acc type (backward)
  void* out;
  int64_t batch;        // B
  int64_t sample_size;  // D
  int64_t num_groups;   // ceil(D / 4)
  int64_t total;        // B * num_groups
  bool index32;
  uint64_t seed;
  uint64_t flat_offset;  // particle_offset D (contract_noise.cuh)
  uint32_t step;
};

DsmVpParams make_params(const DsmVpArgs& a) {
  DsmVpParams prm;
  prm.input = a.input;
  prm.data = a.data;
  prm.coef_a = a.coef_a;
  prm.coef_c = a.coef_c;
  prm.weight = a.weight;
  prm.grad = a.grad_per_sample;
  prm.out = a.out;
  prm.batch = a.batch;
  prm.sample_size = a.sample_size;
  prm.num_groups = (a.sample_size + 3) / 4;
  prm.total = a.batch * prm.num_groups;
  prm.index32 = prm.total <= static_cast<int64_t>(UINT32_MAX);
  prm.seed = a.seed;
  prm.flat_offset = flat_offset(a.particle_offset, a.sample_size);
  prm.step = a.step;
  return prm;
}

// The contract's normals of the group of sample b at element e = b D + 4q (n of the 4 used;
// see contract_noise.cuh). kLayout (here and in the kernels): the NoiseLayout of the normals,
// kAlignedNoise with kVec (D % 4 == 0).
template <int kLayout, typename Acc>
__device__ __forceinline__ void group_normals(const DsmVpParams& prm, int64_t e, int n, Acc (&z)[4]) {
  contract_normals4<kLayout>(prm.seed, prm.flat_offset + static_cast<uint64_t>(e), prm.step, n, z);
}

// Elements of group q in a sample of D: 4 on the vector path, 1..4 otherwise.
template <bool kVec>
__device__ __forceinline__ int group_count(int64_t D, int64_t q) {
  if (kVec) return 4;
  const int64_t rest = D - 4 * q;
  return rest < 4 ? static_cast<int>(rest) : 4;
}

// r = pred - a z - c x (no c x term without data) for group q of sample b; returns the number
// of elements n (r[j] for j >= n is meaningless).
template <typename T, bool kVec, int kLayout, bool kHasX, typename Acc = typename Storage<T>::acc>
__device__ __forceinline__ int group_residual(const DsmVpParams& prm, int64_t b, int64_t q, Acc a, Acc c, Acc (&r)[4]) {
  const int64_t D = prm.sample_size;
  const int n = group_count<kVec>(D, q);
  const int64_t e = b * D + 4 * q;
  load4<T, kVec>(static_cast<const T*>(prm.input) + e, n, r);
  Acc z[4];
  group_normals<kLayout>(prm, e, n, z);
#pragma unroll
  for (int j = 0; j < 4; ++j) r[j] = sub_rn(r[j], mul_rn(a, z[j]));
  if (kHasX) {
    Acc x[4];
    load4<T, kVec>(static_cast<const T*>(prm.data) + e, n, x);
#pragma unroll
    for (int j = 0; j < 4; ++j) r[j] = sub_rn(r[j], mul_rn(c, x[j]));
  }
  return n;
}

// ---------------------------------------------------------------------------------------
// Elementwise: perturb and backward.

template <typename T, bool kVec, int kLayout>
__global__ void __launch_bounds__(kThreads) dsm_vp_perturb_kernel(const DsmVpParams prm) {
  using Acc = typename Storage<T>::acc;
  const T* x = static_cast<const T*>(prm.input);
  T* out = static_cast<T*>(prm.out);
  const Acc* alpha = static_cast<const Acc*>(prm.coef_a);
  const Acc* sigma = static_cast<const Acc*>(prm.coef_c);
  const int64_t D = prm.sample_size;
  for (int64_t i = global_thread_id(); i < prm.total; i += grid_stride()) {
    int64_t b, q;
    particle_group<kLayout>(i, prm.num_groups, prm.index32, b, q);
    const int n = group_count<kVec>(D, q);
    const int64_t e = b * D + 4 * q;
    Acc v[4];
    load4<T, kVec>(x + e, n, v);
    const Acc al = alpha[b], sig = sigma[b];
    Acc z[4];
    group_normals<kLayout>(prm, e, n, z);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = add_rn(mul_rn(al, v[j]), mul_rn(sig, z[j]));
    store4<T, kVec>(out + e, n, v);
  }
}

template <typename T, bool kVec, int kLayout, bool kHasX>
__global__ void __launch_bounds__(kThreads) dsm_vp_backward_kernel(const DsmVpParams prm) {
  using Acc = typename Storage<T>::acc;
  T* out = static_cast<T*>(prm.out);
  const Acc* coef_a = static_cast<const Acc*>(prm.coef_a);
  const Acc* coef_c = static_cast<const Acc*>(prm.coef_c);
  const Acc* grad = static_cast<const Acc*>(prm.grad);
  // The per-sample factors, reread only when the thread moves to another sample.
  int64_t row = -1;
  Acc scale = Acc(0), a = Acc(0), c = Acc(0);
  for (int64_t i = global_thread_id(); i < prm.total; i += grid_stride()) {
    int64_t b, q;
    particle_group<kLayout>(i, prm.num_groups, prm.index32, b, q);
    if (b != row) {
      row = b;
      a = coef_a[b];
      c = coef_c[b];
      scale = mul_rn(grad[b], static_cast<Acc>(2.0 * prm.weight[b]));
    }
    Acc r[4];
    const int n = group_residual<T, kVec, kLayout, kHasX>(prm, b, q, a, c, r);
#pragma unroll
    for (int j = 0; j < 4; ++j) r[j] = mul_rn(scale, r[j]);
    store4<T, kVec>(out + b * prm.sample_size + 4 * q, n, r);
  }
}

// ---------------------------------------------------------------------------------------
// Loss: per-sample reductions.

// Sum of squared residuals over groups first, first + stride, ... of sample b, in double.
template <typename T, bool kVec, int kLayout, bool kHasX>
__device__ __forceinline__ double sample_partial(const DsmVpParams& prm, int64_t b, int64_t first, int64_t stride) {
  using Acc = typename Storage<T>::acc;
  const Acc a = static_cast<const Acc*>(prm.coef_a)[b];
  const Acc c = static_cast<const Acc*>(prm.coef_c)[b];
  double s = 0.0;
  for (int64_t q = first; q < prm.num_groups; q += stride) {
    Acc r[4];
    const int n = group_residual<T, kVec, kLayout, kHasX>(prm, b, q, a, c, r);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < n) {
        const double rd = static_cast<double>(r[j]);
        s += rd * rd;
      }
    }
  }
  return s;
}

template <typename Acc>
__device__ __forceinline__ void store_loss(const DsmVpParams& prm, int64_t b, double sum_sq) {
  static_cast<Acc*>(prm.out)[b] = static_cast<Acc>(sum_sq * prm.weight[b]);
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Samples with at most this many groups get a team within a warp, larger ones a block.
constexpr int64_t kTeamMaxGroups = 128;

// A team of 2^team_log2 (<= 32) consecutive lanes per sample. The loop runs over the warp's
// samples so every lane of a warp takes the same trip count (the shuffles need all 32).
template <typename T, bool kVec, int kLayout, bool kHasX>
__global__ void __launch_bounds__(kThreads, kLossMinBlocks)
    dsm_vp_loss_team_kernel(const DsmVpParams prm, int team_log2) {
  using Acc = typename Storage<T>::acc;
  const int lane = threadIdx.x & 31;
  const int team = 1 << team_log2;
  const int member = lane & (team - 1);
  const int64_t teams_per_warp = 32 >> team_log2;
  const int64_t warp = global_thread_id() >> 5;
  const int64_t warps = grid_stride() >> 5;
  for (int64_t base = warp * teams_per_warp; base < prm.batch; base += warps * teams_per_warp) {
    const int64_t b = base + (lane >> team_log2);
    double s = b < prm.batch ? sample_partial<T, kVec, kLayout, kHasX>(prm, b, member, team) : 0.0;
    for (int offset = team >> 1; offset > 0; offset >>= 1) s += __shfl_down_sync(0xffffffffu, s, offset, team);
    if (member == 0 && b < prm.batch) store_loss<Acc>(prm, b, s);
  }
}

// One block per sample (grid-stride over samples); more than kTeamMaxGroups groups, so never
// packed.
template <typename T, bool kVec, int kLayout, bool kHasX>
__global__ void __launch_bounds__(kThreads, kLossMinBlocks) dsm_vp_loss_block_kernel(const DsmVpParams prm) {
  using Acc = typename Storage<T>::acc;
  __shared__ double partial[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int num_warps = static_cast<int>(blockDim.x >> 5);
  for (int64_t b = blockIdx.x; b < prm.batch; b += gridDim.x) {
    double s = warp_sum(sample_partial<T, kVec, kLayout, kHasX>(prm, b, threadIdx.x, blockDim.x));
    if (lane == 0) partial[warp] = s;
    __syncthreads();
    if (warp == 0) {
      s = warp_sum(lane < num_warps ? partial[lane] : 0.0);
      if (lane == 0) store_loss<Acc>(prm, b, s);
    }
    __syncthreads();  // partial[] is reused by the next sample
  }
}

// ---------------------------------------------------------------------------------------
// Launchers.

enum class Op { kPerturb, kLoss, kBackward };

template <typename T, bool kVec, int kLayout, bool kHasX>
cudaError_t launch_loss(const DsmVpParams& prm, cudaStream_t stream) {
  unsigned int blocks = 0;
  cudaError_t err;
  if (prm.num_groups <= kTeamMaxGroups) {
    int team_log2 = 0;
    while (team_log2 < 5 && (int64_t{1} << team_log2) < prm.num_groups) ++team_log2;
    err = grid_size(prm.batch << team_log2, kThreads, blocks);
    if (err != cudaSuccess) return err;
    dsm_vp_loss_team_kernel<T, kVec, kLayout, kHasX><<<blocks, kThreads, 0, stream>>>(prm, team_log2);
  } else {
    // More than kTeamMaxGroups groups, so never packed: the general layout stands in for it
    // (correct for every D), not instantiated for a kernel never launched.
    constexpr int kBlockLayout = kLayout == kPackedNoise ? kGeneralNoise : kLayout;
    err = grid_size(prm.batch * kThreads, kThreads, blocks);
    if (err != cudaSuccess) return err;
    dsm_vp_loss_block_kernel<T, kVec, kBlockLayout, kHasX><<<blocks, kThreads, 0, stream>>>(prm);
  }
  return cudaGetLastError();
}

template <typename T, bool kVec, int kLayout>
cudaError_t launch_vec(const DsmVpParams& prm, Op op, cudaStream_t stream) {
  const bool has_x = prm.data != nullptr;
  if (op == Op::kLoss)
    return has_x ? launch_loss<T, kVec, kLayout, true>(prm, stream) : launch_loss<T, kVec, kLayout, false>(prm, stream);
  unsigned int blocks = 0;
  const cudaError_t err = grid_size(prm.total, kThreads, blocks);
  if (err != cudaSuccess) return err;
  if (op == Op::kPerturb)
    dsm_vp_perturb_kernel<T, kVec, kLayout><<<blocks, kThreads, 0, stream>>>(prm);
  else if (has_x)
    dsm_vp_backward_kernel<T, kVec, kLayout, true><<<blocks, kThreads, 0, stream>>>(prm);
  else
    dsm_vp_backward_kernel<T, kVec, kLayout, false><<<blocks, kThreads, 0, stream>>>(prm);
  return cudaGetLastError();
}

template <typename T>
cudaError_t dsm_vp_typed(const DsmVpArgs& args, Op op, cudaStream_t stream) {
  if (args.batch == 0 || args.sample_size == 0) return cudaSuccess;
  const DsmVpParams prm = make_params(args);
  const uintptr_t align = quad_alignment<T>();
  bool vec = prm.sample_size % 4 == 0 && is_aligned(args.input, align);
  if (op != Op::kPerturb && args.data != nullptr) vec = vec && is_aligned(args.data, align);
  if (op != Op::kLoss) vec = vec && is_aligned(args.out, align);
  if (vec) return launch_vec<T, true, kAlignedNoise>(prm, op, stream);  // D % 4 == 0
  return with_noise_layout(prm.sample_size,
                           [&](auto layout) { return launch_vec<T, false, decltype(layout)::value>(prm, op, stream); });
}

cudaError_t dsm_vp_dispatch(const DsmVpArgs& args, Op op, cudaStream_t stream) {
  switch (args.dtype) {
    case StorageType::kFloat32:
      return dsm_vp_typed<float>(args, op, stream);
    case StorageType::kFloat64:
      return dsm_vp_typed<double>(args, op, stream);
    case StorageType::kFloat16:
      return dsm_vp_typed<f16_t>(args, op, stream);
    case StorageType::kBFloat16:
      return dsm_vp_typed<bf16_t>(args, op, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_dsm_vp_perturb(const DsmVpArgs& args, cudaStream_t stream) {
  return dsm_vp_dispatch(args, Op::kPerturb, stream);
}

cudaError_t launch_dsm_vp_loss(const DsmVpArgs& args, cudaStream_t stream) {
  return dsm_vp_dispatch(args, Op::kLoss, stream);
}

cudaError_t launch_dsm_vp_loss_backward(const DsmVpArgs& args, cudaStream_t stream) {
  return dsm_vp_dispatch(args, Op::kBackward, stream);
}

}  // namespace cuda
}  // namespace scorefast
