// Fresh outputs of the CPU kernels' out-of-place ops (langevin_step, reverse_step), from a small
// cache of released outputs. A fresh 64 MB tensor costs 2 to 4 ms of page faults and page zeroing
// here even on huge pages: more than the noise of 2^24 elements at D = 8. A released output of
// the same size (a sampling loop's previous state) is reused instead. See output_cache.cpp.
#pragma once

#include <ATen/core/Tensor.h>

namespace scorefast {
namespace cpu {

// A contiguous uninitialised tensor with the sizes and dtype of `like` (a CPU tensor). Outputs of
// at least 8 MB come from the cache (2 MB aligned, on huge pages where the system gives them);
// smaller ones from torch's allocator.
at::Tensor cached_empty_like(const at::Tensor& like);

// The same for a contiguous CPU tensor of `sizes` and `dtype` (scorefast.normal's output).
at::Tensor cached_empty(at::IntArrayRef sizes, at::ScalarType dtype);

}  // namespace cpu
}  // namespace scorefast
