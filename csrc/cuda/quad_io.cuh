// Elementwise device helpers shared by the CUDA kernels: rounded arithmetic that nvcc
// never contracts into FMAs (so results match the C++ CPU kernels operation for
// operation), and loads / stores of four consecutive elements of a storage type as the
// acc type (one vector access when aligned, scalar otherwise). Torch-free; included only
// by csrc/cuda/*.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "scorefast/storage.h"

namespace scorefast {
namespace cuda {

// Rounded arithmetic that is never contracted into an FMA.

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

// Four consecutive elements of a storage type, as the acc type. kVec: one aligned vector
// access (the caller guarantees n == 4 and alignment); otherwise n (1..4) scalar accesses.

template <typename T>
struct Quad;

template <>
struct Quad<float> {
  static __device__ __forceinline__ void load(const float* p, float (&v)[4]) {
    const float4 r = *reinterpret_cast<const float4*>(p);
    v[0] = r.x, v[1] = r.y, v[2] = r.z, v[3] = r.w;
  }
  static __device__ __forceinline__ void store(float* p, const float (&v)[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  }
};

template <>
struct Quad<double> {
  static __device__ __forceinline__ void load(const double* p, double (&v)[4]) {
    const double2 r0 = reinterpret_cast<const double2*>(p)[0];
    const double2 r1 = reinterpret_cast<const double2*>(p)[1];
    v[0] = r0.x, v[1] = r0.y, v[2] = r1.x, v[3] = r1.y;
  }
  static __device__ __forceinline__ void store(double* p, const double (&v)[4]) {
    reinterpret_cast<double2*>(p)[0] = make_double2(v[0], v[1]);
    reinterpret_cast<double2*>(p)[1] = make_double2(v[2], v[3]);
  }
};

// 16-bit storage: 8 bytes as uint2, converted through the raw-bit conversions of storage.h
// (the same rounding as the CPU kernels).
template <typename T>
struct Quad16 {
  static __device__ __forceinline__ void load(const T* p, float (&v)[4]) {
    const uint2 r = *reinterpret_cast<const uint2*>(p);
    const T h[4] = {{static_cast<uint16_t>(r.x & 0xffffu)},
                    {static_cast<uint16_t>(r.x >> 16)},
                    {static_cast<uint16_t>(r.y & 0xffffu)},
                    {static_cast<uint16_t>(r.y >> 16)}};
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = Storage<T>::load(&h[j]);
  }
  static __device__ __forceinline__ void store(T* p, const float (&v)[4]) {
    T h[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) Storage<T>::store(&h[j], v[j]);
    *reinterpret_cast<uint2*>(p) =
        make_uint2(static_cast<uint32_t>(h[0].bits) | (static_cast<uint32_t>(h[1].bits) << 16),
                   static_cast<uint32_t>(h[2].bits) | (static_cast<uint32_t>(h[3].bits) << 16));
  }
};
template <>
struct Quad<f16_t> : Quad16<f16_t> {};
template <>
struct Quad<bf16_t> : Quad16<bf16_t> {};

// Bytes of alignment the vector access of 4 elements of T needs.
template <typename T>
constexpr uintptr_t quad_alignment() {
  return sizeof(T) * 4 < 16 ? sizeof(T) * 4 : 16;
}

template <typename T, bool kVec, typename Acc = typename Storage<T>::acc>
__device__ __forceinline__ void load4(const T* p, int n, Acc (&v)[4]) {
  if constexpr (kVec) {
    Quad<T>::load(p, v);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = j < n ? Storage<T>::load(p + j) : Acc(0);
  }
}

template <typename T, bool kVec, typename Acc = typename Storage<T>::acc>
__device__ __forceinline__ void store4(T* p, int n, const Acc (&v)[4]) {
  if constexpr (kVec) {
    Quad<T>::store(p, v);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < n) Storage<T>::store(p + j, v[j]);
    }
  }
}

}  // namespace cuda
}  // namespace scorefast
