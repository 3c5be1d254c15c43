// Host emulation of the part of the CUDA runtime and device language the scorefast
// kernels use, so csrc/cuda/*.cu can be compiled by a C++ compiler and run on CPU
// tensors (scorefast/testing/cuda_emulator.py builds it; tests run the `cuda` backend through it
// when no GPU is present). It stands in for <cuda_runtime.h> on the include path.
//
// Semantics kept: every thread of a block runs as a cooperative fiber, so __syncthreads,
// __syncwarp and warp shuffles synchronise exactly as on a GPU, and `__shared__`
// variables are shared by the threads of one block (blocks run one after another).
// Strictness where CUDA leaves behaviour undefined: a shuffle or __syncwarp whose mask
// names an exited or missing lane, a deadlocked barrier, or a launch whose dynamic shared
// memory exceeds what cudaFuncSetAttribute allowed raises an error instead of guessing.
// Threads run between barriers in index order, or last to first with
// SCOREFAST_CUDA_EMULATOR_REVERSE=1 (a race-free kernel gives the same bits either way).
// Not emulated: timing, streams (launches run synchronously), memory spaces (device
// pointers are host pointers), and the fast-math device intrinsics' reduced precision.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

struct alignas(8) uint2 {
  unsigned int x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};
struct alignas(16) longlong2 {
  long long x, y;
};
inline uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }
inline longlong2 make_longlong2(long long x, long long y) { return {x, y}; }

typedef struct CUstream_st* cudaStream_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorLaunchFailure = 719,
};
typedef cudaError_t cudaError;

enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

namespace sf_emu {

// Limits of the emulated device (an H100's).
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxThreadsPerSm = 2048;
constexpr size_t kDefaultDynamicSmem = 48 * 1024;
constexpr size_t kMaxSmemOptin = 227 * 1024;

// Identity of the running thread and its launch.
struct LaunchState {
  dim3 grid_dim, block_dim, block_idx;
  unsigned char* dynamic_smem = nullptr;
};
LaunchState& launch_state();
const dim3& thread_idx();

// Runs `body` once per thread of every block (blocks in order, the threads of a block as
// fibers). Throws std::runtime_error with what went wrong inside a thread.
cudaError_t run_grid(const void* kernel, dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& body);

void sync_block();
void sync_warp(unsigned int mask);
uint64_t exchange_lane(unsigned int mask, uint64_t bits, int source_lane);
int lane_id();

void set_last_error(cudaError_t err);
cudaError_t take_last_error();
int emulated_sm_count();
size_t dynamic_smem_limit(const void* kernel);
void set_dynamic_smem_limit(const void* kernel, size_t bytes);

template <typename T>
T shuffle(unsigned int mask, T value, int source_lane) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = exchange_lane(mask, bits, source_lane);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// kernel<<<grid, block, smem, stream>>>(args) is rewritten to launch(kernel, grid, block,
// smem, stream)(args) by scorefast/testing/cuda_emulator.py.
template <typename... Params>
struct Launch {
  void (*kernel)(Params...);
  dim3 grid, block;
  size_t smem;
  template <typename... Args>
  void operator()(Args&&... args) const {
    // Converted once to the parameter types, as a launch does; each thread gets a copy.
    const std::tuple<Params...> params(std::forward<Args>(args)...);
    auto* fn = kernel;
    const cudaError_t err = run_grid(reinterpret_cast<const void*>(fn), grid, block, smem, [&params, fn] {
      std::tuple<Params...> mine = params;
      std::apply(fn, mine);
    });
    set_last_error(err);
  }
};

template <typename... Params>
Launch<Params...> launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return Launch<Params...>{kernel, grid, block, smem};
}

}  // namespace sf_emu

#define threadIdx (::sf_emu::thread_idx())
#define blockIdx (::sf_emu::launch_state().block_idx)
#define blockDim (::sf_emu::launch_state().block_dim)
#define gridDim (::sf_emu::launch_state().grid_dim)

inline void __syncthreads() { ::sf_emu::sync_block(); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) { ::sf_emu::sync_warp(mask); }

template <typename T>
T __shfl_sync(unsigned int mask, T v, int src, int width = 32) {
  const int lane = ::sf_emu::lane_id();
  return ::sf_emu::shuffle(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <typename T>
T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
  const int lane = ::sf_emu::lane_id();
  const int in_segment = (lane & (width - 1)) + static_cast<int>(delta);
  return ::sf_emu::shuffle(mask, v, in_segment < width ? lane + static_cast<int>(delta) : lane);
}
template <typename T>
T __shfl_up_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
  const int lane = ::sf_emu::lane_id();
  const int in_segment = (lane & (width - 1)) - static_cast<int>(delta);
  return ::sf_emu::shuffle(mask, v, in_segment >= 0 ? lane - static_cast<int>(delta) : lane);
}
template <typename T>
T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int width = 32) {
  const int lane = ::sf_emu::lane_id();
  const int src = lane ^ lane_mask;
  // A source in a later segment than the caller's reads the caller's own value (CUDA's rule).
  return ::sf_emu::shuffle(mask, v, (src & ~(width - 1)) > (lane & ~(width - 1)) ? lane : src);
}

// Correctly rounded arithmetic: the emulator is compiled without contraction, so plain
// operators round each operation as these do.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return static_cast<unsigned int>((static_cast<uint64_t>(a) * b) >> 32);
}
inline unsigned int __float_as_uint(float f) {
  unsigned int u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
inline float __uint_as_float(unsigned int u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
template <typename T>
T __ldg(const T* p) {
  return *p;
}

// Runtime API.
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
inline cudaError_t cudaGetLastError() { return ::sf_emu::take_last_error(); }
const char* cudaGetErrorName(cudaError_t err);
const char* cudaGetErrorString(cudaError_t err);

template <typename... Params>
cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > ::sf_emu::kMaxSmemOptin)
    return cudaErrorInvalidValue;
  ::sf_emu::set_dynamic_smem_limit(reinterpret_cast<const void*>(kernel), static_cast<size_t>(value));
  return cudaSuccess;
}

template <typename... Params>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void (*)(Params...), int threads,
                                                          size_t dynamic_smem) {
  if (threads <= 0 || threads > ::sf_emu::kMaxThreadsPerBlock) return cudaErrorInvalidValue;
  int n = ::sf_emu::kMaxThreadsPerSm / threads;
  if (dynamic_smem > 0) {
    const int by_smem = static_cast<int>(::sf_emu::kMaxSmemOptin / dynamic_smem);
    n = n < by_smem ? n : by_smem;
  }
  *blocks = n;
  return cudaSuccess;
}
