// DSM kernels on the CPU for samples [begin, end): the flattened range is walked in tiles
// that stay in L1; each tile's noise comes from fill_normals() (the contract) and is used
// at once. Included inside an ISA namespace by isa_*.cpp after noise_kernels.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "scorefast/dsm.h"
#include "scorefast/storage.h"

namespace dsm_detail {

using scorefast::DsmArgs;
using scorefast::Storage;

constexpr int64_t kTile = 2048;

enum class Kind { kPerturb, kLoss, kBackward };

// sigma^p: the common weightings without a pow call per sample.
static inline double weight(double sigma, double power) {
  if (power == 2.0) return sigma * sigma;
  if (power == 0.0) return 1.0;
  if (power == 1.0) return sigma;
  return std::pow(sigma, power);
}

template <typename T, Kind kKind>
static void dsm_impl(const DsmArgs& a, int64_t begin, int64_t end) {
  using Acc = typename Storage<T>::acc;
  const int64_t D = a.sample_size;
  const T* in = static_cast<const T*>(a.input);
  const Acc* sigma = static_cast<const Acc*>(a.sigma);
  const Acc* g = static_cast<const Acc*>(a.grad_per_sample);
  alignas(64) float z[kTile];
  const int64_t e_end = end * D;
  int64_t b = begin;
  double row_sum = 0.0;  // the loss of sample b so far
  Acc scale = 0, inv_sigma = 0, sig = 0;
  auto start_row = [&](int64_t row) {
    sig = sigma[row];
    inv_sigma = Acc(1) / sig;
    if (kKind == Kind::kBackward) {
      scale = a.eps_form ? Acc(2) * g[row] : g[row] * static_cast<Acc>(weight(static_cast<double>(sig), a.power));
    }
  };
  auto finish_row = [&](int64_t row) {
    if (kKind != Kind::kLoss) return;
    double l = row_sum;
    if (!a.eps_form) l *= 0.5 * weight(static_cast<double>(sigma[row]), a.power);
    static_cast<Acc*>(a.out)[row] = static_cast<Acc>(l);
    row_sum = 0.0;
  };
  if (begin < end) start_row(begin);
  int64_t d = 0;
  for (int64_t e0 = begin * D; e0 < e_end; e0 += kTile) {
    const int64_t n = e_end - e0 < kTile ? e_end - e0 : kTile;
    fill_normals(z, D, a.seed, a.step, a.particle_offset, e0, n);
    for (int64_t i = 0; i < n;) {
      const int64_t len = n - i < D - d ? n - i : D - d;  // the rest of sample b in this tile
      const int64_t e = e0 + i;
      if (kKind == Kind::kPerturb) {
        T* out = static_cast<T*>(a.out);
        for (int64_t k = 0; k < len; ++k)
          Storage<T>::store(out + e + k, Storage<T>::load(in + e + k) + sig * static_cast<Acc>(z[i + k]));
      } else if (kKind == Kind::kLoss) {
        // four double partial sums, so the loop vectorises without reassociation flags
        double part[4] = {0, 0, 0, 0};
        const Acc c = a.eps_form ? Acc(-1) : inv_sigma;
        int64_t k = 0;
        for (; k + 4 <= len; k += 4)
          for (int j = 0; j < 4; ++j) {
            const Acc r = Storage<T>::load(in + e + k + j) + static_cast<Acc>(z[i + k + j]) * c;
            part[j] += static_cast<double>(r) * static_cast<double>(r);
          }
        for (; k < len; ++k) {
          const Acc r = Storage<T>::load(in + e + k) + static_cast<Acc>(z[i + k]) * c;
          part[0] += static_cast<double>(r) * static_cast<double>(r);
        }
        row_sum += (part[0] + part[1]) + (part[2] + part[3]);
      } else {
        T* out = static_cast<T*>(a.out);
        for (int64_t k = 0; k < len; ++k) {
          const Acc p = Storage<T>::load(in + e + k);
          const Acc r = p + static_cast<Acc>(z[i + k]) * (a.eps_form ? Acc(-1) : inv_sigma);
          Storage<T>::store(out + e + k, scale * r);
        }
      }
      i += len;
      d += len;
      if (d == D) {
        finish_row(b);
        d = 0;
        if (++b < end) start_row(b);
      }
    }
  }
}

// Samples of D <= 4 elements (low-dimensional data): whole samples per tile, D known at
// compile time, so the per-sample bookkeeping of dsm_impl (row starts and ends inside a
// tile) does not cost more than the sample's own arithmetic. Same operations per element
// and the same summation order as dsm_impl, so the results are identical.
template <typename T, Kind kKind, int D>
static void dsm_small(const DsmArgs& a, int64_t begin, int64_t end) {
  using Acc = typename Storage<T>::acc;
  constexpr int64_t kRows = kTile / D;
  const T* in = static_cast<const T*>(a.input);
  const Acc* sigma = static_cast<const Acc*>(a.sigma);
  const Acc* g = static_cast<const Acc*>(a.grad_per_sample);
  alignas(64) float z[kTile];
  for (int64_t r0 = begin; r0 < end; r0 += kRows) {
    const int64_t rows = end - r0 < kRows ? end - r0 : kRows;
    fill_normals(z, D, a.seed, a.step, a.particle_offset, r0 * D, rows * D);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t row = r0 + i, e = row * D;
      const Acc sig = sigma[row];
      const float* zr = z + i * D;
      if (kKind == Kind::kPerturb) {
        T* out = static_cast<T*>(a.out);
        for (int k = 0; k < D; ++k) Storage<T>::store(out + e + k, Storage<T>::load(in + e + k) + sig * static_cast<Acc>(zr[k]));
      } else if (kKind == Kind::kLoss) {
        const Acc c = a.eps_form ? Acc(-1) : Acc(1) / sig;
        double part[4] = {0, 0, 0, 0};
        for (int k = 0; k < D; ++k) {
          const Acc r = Storage<T>::load(in + e + k) + static_cast<Acc>(zr[k]) * c;
          part[k] = static_cast<double>(r) * static_cast<double>(r);
        }
        double l = (part[0] + part[1]) + (part[2] + part[3]);
        if (!a.eps_form) l *= 0.5 * weight(static_cast<double>(sig), a.power);
        static_cast<Acc*>(a.out)[row] = static_cast<Acc>(l);
      } else {
        T* out = static_cast<T*>(a.out);
        const Acc scale = a.eps_form ? Acc(2) * g[row] : g[row] * static_cast<Acc>(weight(static_cast<double>(sig), a.power));
        const Acc c = a.eps_form ? Acc(-1) : Acc(1) / sig;
        for (int k = 0; k < D; ++k) {
          const Acc r = Storage<T>::load(in + e + k) + static_cast<Acc>(zr[k]) * c;
          Storage<T>::store(out + e + k, scale * r);
        }
      }
    }
  }
}

template <typename T, Kind kKind>
static void dsm_rows(const DsmArgs& a, int64_t begin, int64_t end) {
  switch (a.sample_size) {
    case 1: return dsm_small<T, kKind, 1>(a, begin, end);
    case 2: return dsm_small<T, kKind, 2>(a, begin, end);
    case 3: return dsm_small<T, kKind, 3>(a, begin, end);
    case 4: return dsm_small<T, kKind, 4>(a, begin, end);
    default: return dsm_impl<T, kKind>(a, begin, end);
  }
}

template <Kind kKind>
static void dsm_dispatch(const DsmArgs& a, int64_t begin, int64_t end) {
  using scorefast::StorageType;
  switch (a.dtype) {
    case StorageType::kFloat32: return dsm_rows<float, kKind>(a, begin, end);
    case StorageType::kFloat64: return dsm_rows<double, kKind>(a, begin, end);
    case StorageType::kFloat16: return dsm_rows<scorefast::f16_t, kKind>(a, begin, end);
    case StorageType::kBFloat16: return dsm_rows<scorefast::bf16_t, kKind>(a, begin, end);
  }
}

}  // namespace dsm_detail

static void dsm_perturb_range(const scorefast::DsmArgs& a, int64_t begin, int64_t end) {
  dsm_detail::dsm_dispatch<dsm_detail::Kind::kPerturb>(a, begin, end);
}
static void dsm_loss_range(const scorefast::DsmArgs& a, int64_t begin, int64_t end) {
  dsm_detail::dsm_dispatch<dsm_detail::Kind::kLoss>(a, begin, end);
}
static void dsm_backward_range(const scorefast::DsmArgs& a, int64_t begin, int64_t end) {
  dsm_detail::dsm_dispatch<dsm_detail::Kind::kBackward>(a, begin, end);
}
