// Storage types of the kernels without torch headers: float, double, and 16-bit
// floats held as raw bits. Math runs in `acc` (float, or double for double storage).
#pragma once

#include <cstdint>
#include <cstring>

#include "scorefast/philox.h"  // SF_HOST_DEVICE

namespace scorefast {

enum class StorageType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

struct f16_t {
  uint16_t bits;
};
struct bf16_t {
  uint16_t bits;
};

SF_HOST_DEVICE uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

SF_HOST_DEVICE float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// IEEE half <-> float, round to nearest even, NaN stays NaN, overflow to inf.
SF_HOST_DEVICE float half_bits_to_float(uint16_t h) {
  const float magic = bits_float(113u << 23);
  const uint32_t shifted_exp = 0x7c00u << 13;
  uint32_t o = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
  const uint32_t exp = shifted_exp & o;
  o += (127u - 15u) << 23;
  if (exp == shifted_exp) {
    o += (128u - 16u) << 23;  // inf / nan
  } else if (exp == 0) {
    o += 1u << 23;  // zero / subnormal: renormalise through float arithmetic
    o = float_bits(bits_float(o) - magic);
  }
  o |= (static_cast<uint32_t>(h) & 0x8000u) << 16;
  return bits_float(o);
}

SF_HOST_DEVICE uint16_t float_to_half_bits(float value) {
  const uint32_t f32_inf = 255u << 23;
  const uint32_t f16_max = (127u + 16u) << 23;
  const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t f = float_bits(value);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  uint32_t o;
  if (f >= f16_max) {
    o = f > f32_inf ? 0x7e00u : 0x7c00u;
  } else if (f < (113u << 23)) {
    // Subnormal half or zero: align the mantissa with a float add (rounds to nearest even).
    o = float_bits(bits_float(f) + bits_float(denorm_magic)) - denorm_magic;
  } else {
    const uint32_t mant_odd = (f >> 13) & 1u;
    f += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
    f += mant_odd;
    o = f >> 13;
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

SF_HOST_DEVICE float bf16_bits_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

SF_HOST_DEVICE uint16_t float_to_bf16_bits(float value) {
  const uint32_t u = float_bits(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

template <typename T>
struct Storage;

template <>
struct Storage<float> {
  using acc = float;
  static SF_HOST_DEVICE acc load(const float* p) { return *p; }
  static SF_HOST_DEVICE void store(float* p, acc v) { *p = v; }
};

template <>
struct Storage<double> {
  using acc = double;
  static SF_HOST_DEVICE acc load(const double* p) { return *p; }
  static SF_HOST_DEVICE void store(double* p, acc v) { *p = v; }
};

template <>
struct Storage<f16_t> {
  using acc = float;
  static SF_HOST_DEVICE acc load(const f16_t* p) { return half_bits_to_float(p->bits); }
  static SF_HOST_DEVICE void store(f16_t* p, acc v) { p->bits = float_to_half_bits(v); }
};

template <>
struct Storage<bf16_t> {
  using acc = float;
  static SF_HOST_DEVICE acc load(const bf16_t* p) { return bf16_bits_to_float(p->bits); }
  static SF_HOST_DEVICE void store(bf16_t* p, acc v) { p->bits = float_to_bf16_bits(v); }
};

// v rounded to storage type T and back: a chain's state lives in storage between steps, as
// in T separate langevin_step calls.
template <typename T>
SF_HOST_DEVICE typename Storage<T>::acc round_to_storage(typename Storage<T>::acc v) {
  T tmp;
  Storage<T>::store(&tmp, v);
  return Storage<T>::load(&tmp);
}

// Loads element i of a buffer whose storage type is only known at run time.
template <typename Acc>
SF_HOST_DEVICE Acc load_as(const void* base, StorageType type, int64_t i) {
  switch (type) {
    case StorageType::kFloat32:
      return static_cast<Acc>(static_cast<const float*>(base)[i]);
    case StorageType::kFloat64:
      return static_cast<Acc>(static_cast<const double*>(base)[i]);
    case StorageType::kFloat16:
      return static_cast<Acc>(Storage<f16_t>::load(static_cast<const f16_t*>(base) + i));
    default:
      return static_cast<Acc>(Storage<bf16_t>::load(static_cast<const bf16_t*>(base) + i));
  }
}

}  // namespace scorefast
