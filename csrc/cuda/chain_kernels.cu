// CUDA kernels of gmm_chain (see scorefast/chain.h): one thread per particle runs all T
// steps, the state kept local between steps, as the CPU kernel (csrc/cpu/isa_chain_kernels.inc):
//
//   ULA / annealed:  x <- round(x + a_t s_t(x) + sqrt(2 a_t) z),  s_t: mixture noised by sigma2_t
//   MALA:            y = round(x + a_t s(x) + sqrt(2 a_t) z), accepted when log u < log alpha
//                    (alpha in double; u = word 0 of counter p', group ceil(D/4), for every D;
//                    NaN: rejected)
//
// round() is the storage type's rounding; z and u come from the noise contract at
// (seed, step_offset + t, particle_offset + p), so a chain equals T single steps whatever
// the launch configuration. Two designs:
// * D <= 4: D a template parameter, state and score in registers; the mixture's parameters
//   sit in shared memory (gmm_device.cuh's tiles): staged once when K fits one tile, else a
//   tile at a time per evaluation, every thread of the block taking part in the staging.
// * D > 4: the particle's vectors (x, s(x) and a temporary; MALA adds y and s(y)) live in a
//   device workspace, interleaved across thread slots so that a warp's accesses are
//   coalesced; the slots are few enough to keep the workspace under kWorkspaceBudget.
//
// Math in float (double for float64 storage) with the precise expf/logf/sqrtf; the update
// uses explicitly rounded operations, as langevin_step's kernel. Do not build with fast
// math. Results agree with the CPU kernels to rounding, not bitwise.
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "chain_launchers.h"
#include "contract_noise.cuh"
#include "gmm_device.cuh"
#include "kernel_common.cuh"
#include "quad_io.cuh"
#include "scorefast/chain.h"
#include "scorefast/philox.h"
#include "scorefast/storage.h"

namespace scorefast {
namespace cuda {
namespace {

// x + a s + b z with every operation rounded (no FMA contraction), then to storage.
template <typename T, typename Acc>
__device__ __forceinline__ Acc langevin_update(Acc x, Acc a, Acc s, Acc b, Acc z) {
  return round_to_storage<T>(add_rn(add_rn(x, mul_rn(a, s)), mul_rn(b, z)));
}

// MALA's log acceptance ratio in double: log p(y) - log p(x) - back / (4 a) + fwd / 2, with
// back = |x - y - a s(y)|^2 and fwd = |z|^2.
__device__ __forceinline__ double mala_log_alpha(double lpy, double lpx, double back, double fwd, double a) {
  return lpy - lpx - back / (4.0 * a) + 0.5 * fwd;
}

// Whether MALA accepts at (particle, step): log u < log alpha, u = uniform of word 0 of counter
// (lo32(p'), hi32(p'), step, q_uniform = ceil(D / 4)), for every D (the normals draw counters
// of last word 0 only, so never these). A NaN log alpha compares false: a rejection.
__device__ __forceinline__ bool mala_accepts(double log_alpha, uint64_t seed, uint64_t particle, uint32_t step,
                                             uint32_t q_uniform) {
  const PhiloxWords w = noise_words(seed, particle, step, q_uniform);
  return log(static_cast<double>(uint32_to_uniform(w.w0))) < log_alpha;
}

// ---------------------------------------------------------------------------------------
// D <= 4: registers.

template <typename T, int kD, bool kFull, bool kMala>
__global__ void __launch_bounds__(kThreads, 1) chain_small_kernel(const ChainArgs c) {
  using Acc = typename Storage<T>::acc;
  using Tile = SmallTile<Acc, kD, kFull>;
  constexpr int kSmallLayout = noise_layout(kD);
  __shared__ Acc tile[Tile::kSize];

  const GmmArgs& g = c.mixture;
  const int64_t N = g.num_points, K = g.num_components, VC = g.var_cols, num_steps = c.num_steps;
  const Acc* means = static_cast<const Acc*>(g.means);
  const Acc* var = static_cast<const Acc*>(g.var);
  const Acc* factor = static_cast<const Acc*>(g.factor);
  const Acc* log_const = static_cast<const Acc*>(g.log_const);
  const Acc* a_t = static_cast<const Acc*>(c.step_size);
  const Acc* s2_t = static_cast<const Acc*>(c.sigma2);
  T* x = static_cast<T*>(c.x);
  T* traj = static_cast<T*>(c.trajectory);
  const int64_t every = c.trajectory_every;
  const bool iso = VC == 1;
  const bool one_tile = K <= kTileComponents;
  if (one_tile) {  // staged once; no thread writes the tile again
    Tile::stage(tile, 0, static_cast<int>(K), means, var, VC, factor, log_const);
    __syncthreads();
  }

  // Score (into sc) and log p of the mixture noised by s2 at pt. Every thread of the block
  // makes the same calls (the staging synchronises); inactive threads compute nothing.
  auto eval = [&](const Acc(&pt)[kD], Acc s2, Acc(&sc)[kD], bool active) -> Acc {
    Acc m = neg_inf<Acc>(), S = 0;
#pragma unroll
    for (int d = 0; d < kD; ++d) sc[d] = 0;
    for (int64_t k0 = 0; k0 < K; k0 += kTileComponents) {
      const int tk = static_cast<int>(K - k0 < kTileComponents ? K - k0 : kTileComponents);
      if (!one_tile) {    // block-uniform
        __syncthreads();  // the previous tile is no longer read
        Tile::stage(tile, k0, tk, means, var, VC, factor, log_const);
        __syncthreads();
      }
      if (active) Tile::accumulate(tile, tk, true, iso, s2, pt, m, S, sc);
    }
    const Acc inv_S = Acc(1) / S;
#pragma unroll
    for (int d = 0; d < kD; ++d) sc[d] *= inv_S;
    return m + sf_log(S);
  };

  // Block-uniform bounds: every thread of a block runs the same iterations and steps.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < N;
       base += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = base + threadIdx.x;
    const bool active = n < N;
    const uint64_t particle = c.particle_offset + static_cast<uint64_t>(n);
    Acc xs[kD], sx[kD];
#pragma unroll
    for (int d = 0; d < kD; ++d) xs[d] = active ? Storage<T>::load(x + n * kD + d) : Acc(0);
    Acc lpx = 0;
    if (kMala) lpx = eval(xs, Acc(0), sx, active);
    int64_t accepted = 0;

    for (int64_t s = 0; s < num_steps; ++s) {
      const uint32_t step = c.step_offset + static_cast<uint32_t>(s);
      const Acc a = a_t[s];
      const Acc b = sf_sqrt(Acc(2) * a);
      Acc z[kD];
      {
        // D <= 4: one group, q = 0
        float zf[4] = {0.f, 0.f, 0.f, 0.f};
        if (active) contract_normals4<kSmallLayout>(c.seed, particle * kD, step, kD, zf);
#pragma unroll
        for (int d = 0; d < kD; ++d) z[d] = static_cast<Acc>(zf[d]);
      }
      if constexpr (!kMala) {
        eval(xs, s2_t[s], sx, active);
#pragma unroll
        for (int d = 0; d < kD; ++d) xs[d] = langevin_update<T>(xs[d], a, sx[d], b, z[d]);
      } else {
        Acc y[kD], sy[kD];
        double fwd = 0;
#pragma unroll
        for (int d = 0; d < kD; ++d) {
          y[d] = langevin_update<T>(xs[d], a, sx[d], b, z[d]);
          fwd += static_cast<double>(z[d]) * static_cast<double>(z[d]);
        }
        const Acc lpy = eval(y, Acc(0), sy, active);
        double back = 0;
#pragma unroll
        for (int d = 0; d < kD; ++d) {
          const double r = static_cast<double>(xs[d]) - static_cast<double>(y[d]) -
                           static_cast<double>(a) * static_cast<double>(sy[d]);
          back += r * r;
        }
        const double log_alpha = mala_log_alpha(lpy, lpx, back, fwd, a);
        if (active && mala_accepts(log_alpha, c.seed, particle, step, 1)) {  // group ceil(D/4) = 1
#pragma unroll
          for (int d = 0; d < kD; ++d) {
            xs[d] = y[d];
            sx[d] = sy[d];
          }
          lpx = lpy;
          ++accepted;
        }
      }
      if (active && every > 0 && (s + 1) % every == 0) {
        T* row = traj + ((s + 1) / every - 1) * N * kD + n * kD;
#pragma unroll
        for (int d = 0; d < kD; ++d) Storage<T>::store(row + d, xs[d]);
      }
    }
    if (active) {
#pragma unroll
      for (int d = 0; d < kD; ++d) Storage<T>::store(x + n * kD + d, xs[d]);
      if (c.accepted != nullptr) c.accepted[n] = accepted;
    }
  }
}

// ---------------------------------------------------------------------------------------
// D > 4: vectors in the workspace.

// One vector of a thread slot: element d at p[d * stride] (stride = the number of slots).
template <typename Acc>
struct SlotVec {
  Acc* p;
  int64_t stride;
  __device__ __forceinline__ Acc& operator[](int64_t d) const { return p[d * stride]; }
};

// Score (into score) and log p at x of the mixture noised by s2, as the CPU's gmm_point;
// u is a temporary (t, then h . t).
template <typename Acc>
__device__ Acc gmm_point(const GmmArgs& g, SlotVec<Acc> x, Acc s2, SlotVec<Acc> score, SlotVec<Acc> u) {
  const int64_t D = g.dim, K = g.num_components, VC = g.var_cols;
  const Acc* means = static_cast<const Acc*>(g.means);
  const Acc* var = static_cast<const Acc*>(g.var);
  const Acc* factor = static_cast<const Acc*>(g.factor);
  const Acc* log_const = static_cast<const Acc*>(g.log_const);
  const Acc ninf = neg_inf<Acc>();
  Acc m = ninf, S = 0;
  for (int64_t d = 0; d < D; ++d) score[d] = 0;
  for (int64_t k = 0; k < K; ++k) {
    const Acc* mu = means + k * D;
    const Acc* F = factor != nullptr ? factor + k * D * D : nullptr;
    if (F != nullptr) {  // t_j = sum_i (x_i - mu_i) F_ij, summed over i in order
      for (int64_t j = 0; j < D; ++j) {
        Acc t = 0;
        for (int64_t i = 0; i < D; ++i) t += (x[i] - mu[i]) * F[i * D + j];
        u[j] = t;
      }
    } else {
      for (int64_t d = 0; d < D; ++d) u[d] = x[d] - mu[d];
    }
    Acc quad = 0, log_det = 0;
    for (int64_t d = 0; d < D; ++d) {
      const Acc v = var[k * VC + (VC == 1 ? 0 : d)] + s2;
      const Acc t = u[d];
      const Acc ud = t / v;
      quad += ud * t;
      u[d] = ud;
      if (VC != 1 || d == 0) log_det += sf_log(v);
    }
    if (VC == 1) log_det *= static_cast<Acc>(D);
    const Acc l = log_const[k] - Acc(0.5) * (quad + log_det);
    if (l == ninf) continue;  // weight 0, or infinitely far: contributes nothing
    if (l > m) {              // new running max: rescale what is accumulated
      const Acc r = sf_exp(m - l);
      S *= r;
      for (int64_t d = 0; d < D; ++d) score[d] *= r;
      m = l;
    }
    const Acc e = sf_exp(l - m);  // NaN l gives NaN e: the point's result is NaN
    S += e;
    if (F != nullptr) {
      for (int64_t i = 0; i < D; ++i) {
        Acc s = 0;
        for (int64_t j = 0; j < D; ++j) s += F[i * D + j] * u[j];
        score[i] -= e * s;
      }
    } else {
      for (int64_t d = 0; d < D; ++d) score[d] -= e * u[d];
    }
  }
  for (int64_t d = 0; d < D; ++d) score[d] /= S;
  return m + sf_log(S);
}

// Thread slot j (of gridDim.x * blockDim.x) runs particles j, j + slots, ...; its vectors
// are workspace rows [b * D, (b + 1) * D) of column j, b = 0 .. (mala ? 5 : 3) - 1. A step's
// normals are drawn group by group in layout kLayout (aligned or general: D > 4) into u, which
// is free between evaluations, before the update reads them (drawn inside the update, the
// noise costs the kernel registers it would spill).
template <typename T, int kLayout>
__global__ void __launch_bounds__(kThreads)
    chain_thread_kernel(const ChainArgs c, typename Storage<T>::acc* ws, uint64_t flat_offset) {
  using Acc = typename Storage<T>::acc;
  const GmmArgs& g = c.mixture;
  const int64_t N = g.num_points, D = g.dim, num_steps = c.num_steps;
  const int64_t slots = grid_stride(), j = global_thread_id();
  const Acc* a_t = static_cast<const Acc*>(c.step_size);
  const Acc* s2_t = static_cast<const Acc*>(c.sigma2);
  T* x = static_cast<T*>(c.x);
  T* traj = static_cast<T*>(c.trajectory);
  const int64_t every = c.trajectory_every;
  const int64_t Q = (D + 3) / 4;
  auto row = [&](int64_t b) { return SlotVec<Acc>{ws + b * D * slots + j, slots}; };
  SlotVec<Acc> xs = row(0), sx = row(1), u = row(2);
  SlotVec<Acc> y = row(c.mala ? 3 : 0), sy = row(c.mala ? 4 : 1);  // MALA only (the workspace's size)

  for (int64_t n = j; n < N; n += slots) {
    for (int64_t d = 0; d < D; ++d) xs[d] = Storage<T>::load(x + n * D + d);
    Acc lpx = 0;
    if (c.mala) lpx = gmm_point(g, xs, Acc(0), sx, u);
    int64_t accepted = 0;

    for (int64_t s = 0; s < num_steps; ++s) {
      const uint32_t step = c.step_offset + static_cast<uint32_t>(s);
      const Acc a = a_t[s];
      const Acc b = sf_sqrt(Acc(2) * a);
      if (!c.mala) gmm_point(g, xs, s2_t[s], sx, u);
      // The step's normals into u.
      for (int64_t q = 0; q < Q; ++q) {
        const int nq = D - 4 * q < 4 ? static_cast<int>(D - 4 * q) : 4;
        float z[4];
        contract_normals4<kLayout>(c.seed, flat_offset + static_cast<uint64_t>(n * D + 4 * q), step, nq, z);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          if (i < nq) u[4 * q + i] = static_cast<Acc>(z[i]);
        }
      }
      if (!c.mala) {
        for (int64_t d = 0; d < D; ++d) xs[d] = langevin_update<T>(xs[d], a, sx[d], b, u[d]);
      } else {
        double fwd = 0;
        for (int64_t d = 0; d < D; ++d) {
          const Acc zd = u[d];
          y[d] = langevin_update<T>(xs[d], a, sx[d], b, zd);
          fwd += static_cast<double>(zd) * static_cast<double>(zd);
        }
        const Acc lpy = gmm_point(g, y, Acc(0), sy, u);
        double back = 0;
        for (int64_t d = 0; d < D; ++d) {
          const double r = static_cast<double>(xs[d]) - static_cast<double>(y[d]) -
                           static_cast<double>(a) * static_cast<double>(sy[d]);
          back += r * r;
        }
        const double log_alpha = mala_log_alpha(lpy, lpx, back, fwd, a);
        if (mala_accepts(log_alpha, c.seed, c.particle_offset + static_cast<uint64_t>(n), step,
                         static_cast<uint32_t>(Q))) {
          // y and s(y) become the state: swap the slot's vectors instead of copying
          const SlotVec<Acc> tx = xs, ts = sx;
          xs = y;
          sx = sy;
          y = tx;
          sy = ts;
          lpx = lpy;
          ++accepted;
        }
      }
      if (every > 0 && (s + 1) % every == 0) {
        T* row = traj + ((s + 1) / every - 1) * N * D + n * D;
        for (int64_t d = 0; d < D; ++d) Storage<T>::store(row + d, xs[d]);
      }
    }
    for (int64_t d = 0; d < D; ++d) Storage<T>::store(x + n * D + d, xs[d]);
    if (c.accepted != nullptr) c.accepted[n] = accepted;
  }
}

// ---------------------------------------------------------------------------------------
// Launch.

// Workspace of the D > 4 kernel, at most this much (unless even one warp needs more).
constexpr int64_t kWorkspaceBudget = int64_t{256} << 20;

struct ThreadPlan {
  unsigned int blocks = 0;
  int threads = 0;
  size_t bytes = 0;  // workspace
};

// Slots: enough for every particle (in warps), at most the resident grid of the other
// kernels, and few enough that the workspace stays within the budget; at least one warp.
cudaError_t plan_thread_kernel(const ChainArgs& c, ThreadPlan& plan) {
  const int64_t acc_size = c.mixture.dtype == StorageType::kFloat64 ? 8 : 4;
  const int64_t per_slot = (c.mala ? 5 : 3) * c.mixture.dim * acc_size;
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  int64_t slots = (c.mixture.num_points + 31) / 32 * 32;
  const int64_t resident = static_cast<int64_t>(sms > 0 ? sms : 1) * kBlocksPerSm * kThreads;
  if (slots > resident) slots = resident;
  const int64_t affordable = kWorkspaceBudget / per_slot / 32 * 32;
  if (slots > affordable) slots = affordable;
  if (slots < 32) slots = 32;
  const int64_t threads = slots < kThreads ? slots : kThreads;
  const int64_t blocks = slots / threads;
  plan.threads = static_cast<int>(threads);
  plan.blocks = static_cast<unsigned int>(blocks);
  plan.bytes = static_cast<size_t>(blocks * threads * per_slot);
  return cudaSuccess;
}

template <typename T, int kD>
cudaError_t launch_small(const ChainArgs& c, cudaStream_t stream) {
  unsigned int blocks = 0;
  cudaError_t err = grid_size(c.mixture.num_points, kThreads, blocks);
  if (err != cudaSuccess) return err;
  const bool full = c.mixture.factor != nullptr;
  if (c.mala) {
    if (full)
      chain_small_kernel<T, kD, true, true><<<blocks, kThreads, 0, stream>>>(c);
    else
      chain_small_kernel<T, kD, false, true><<<blocks, kThreads, 0, stream>>>(c);
  } else {
    if (full)
      chain_small_kernel<T, kD, true, false><<<blocks, kThreads, 0, stream>>>(c);
    else
      chain_small_kernel<T, kD, false, false><<<blocks, kThreads, 0, stream>>>(c);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t chain_typed(const ChainArgs& c, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  switch (c.mixture.dim) {
    case 1:
      return launch_small<T, 1>(c, stream);
    case 2:
      return launch_small<T, 2>(c, stream);
    case 3:
      return launch_small<T, 3>(c, stream);
    case 4:
      return launch_small<T, 4>(c, stream);
    default:
      break;
  }
  static_assert(kSmallMaxD == 4, "launch_small covers D = 1..kSmallMaxD");
  ThreadPlan plan;
  cudaError_t err = plan_thread_kernel(c, plan);
  if (err != cudaSuccess) return err;
  if (workspace == nullptr || workspace_bytes < plan.bytes) return cudaErrorInvalidValue;
  using Acc = typename Storage<T>::acc;
  const uint64_t flat = flat_offset(c.particle_offset, c.mixture.dim);
  with_noise_layout(
      c.mixture.dim,
      [&](auto layout) {
        constexpr int kLayout = decltype(layout)::value;
        chain_thread_kernel<T, kLayout>
            <<<plan.blocks, plan.threads, 0, stream>>>(c, static_cast<Acc*>(workspace), flat);
      },
      false);
  return cudaGetLastError();
}

bool valid(const ChainArgs& c) {
  const GmmArgs& g = c.mixture;
  return g.num_components >= 1 && g.dim >= 1 && (g.var_cols == 1 || g.var_cols == g.dim) && c.num_steps >= 0 &&
         c.trajectory_every >= 0 &&
         // no frame (every > T) leaves the trajectory empty: no storage
         (c.trajectory_every == 0 || c.trajectory_every > c.num_steps || c.trajectory != nullptr) &&
         (!c.mala || c.accepted != nullptr);
}

}  // namespace

cudaError_t gmm_chain_workspace_size(const ChainArgs& args, size_t& bytes) {
  bytes = 0;
  if (args.mixture.dim <= kSmallMaxD || args.mixture.num_points == 0 || args.num_steps == 0) return cudaSuccess;
  ThreadPlan plan;
  const cudaError_t err = plan_thread_kernel(args, plan);
  if (err == cudaSuccess) bytes = plan.bytes;
  return err;
}

cudaError_t launch_gmm_chain(const ChainArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (args.mixture.num_points == 0 || args.num_steps == 0) return cudaSuccess;
  if (!valid(args)) return cudaErrorInvalidValue;
  switch (args.mixture.dtype) {
    case StorageType::kFloat32:
      return chain_typed<float>(args, workspace, workspace_bytes, stream);
    case StorageType::kFloat64:
      return chain_typed<double>(args, workspace, workspace_bytes, stream);
    case StorageType::kFloat16:
      return chain_typed<f16_t>(args, workspace, workspace_bytes, stream);
    case StorageType::kBFloat16:
      return chain_typed<bf16_t>(args, workspace, workspace_bytes, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace scorefast
