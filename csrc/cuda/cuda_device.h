// What the CUDA glue of every op (csrc/cuda/<op>_cuda.cpp) shares: the device policy of the
// op templates (csrc/op_wrappers.h), the current stream and the launch-error check. Compiled
// only in CUDA builds (setup.py defines SCOREFAST_WITH_CUDA) and in the CUDA emulator.
// Only c10/ATen core headers: the current stream comes from the CUDA device-guard
// implementation registered by libtorch, so no c10/cuda or ATen/cuda header is needed.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/Exception.h>

#include <cuda_runtime_api.h>

namespace scorefast {

struct CudaDevice {
  // The kernels read a *_counter_ op's step from device memory when they run (see
  // noise_launchers.h).
  static constexpr bool kKernelReadsStepTensor = true;

  using Guard = c10::DeviceGuard;

  static void check(const at::Tensor& t, const char* name) {
#if defined(SCOREFAST_CUDA_EMULATION)
    TORCH_CHECK(t.is_cpu(), name, " must be a CPU tensor for the emulated CUDA kernel, got ", t.device());
#else
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor for the CUDA kernel, got ", t.device());
#endif
  }

  static at::Tensor new_output(const at::Tensor& like) { return at::empty_like(like, at::MemoryFormat::Contiguous); }
};

// The current CUDA stream of `device` (the one torch's CUDA ops on that device use).
inline cudaStream_t current_stream(const c10::Device& device) {
#if defined(SCOREFAST_CUDA_EMULATION)
  (void)device;
  return nullptr;  // the emulator runs every launch synchronously
#else
  const c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
  return static_cast<cudaStream_t>(impl.getStreamNativeHandle(impl.getStream(device)));
#endif
}

inline void check_cuda_result(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "scorefast CUDA kernel ", what, " failed: ", cudaGetErrorName(err), ": ",
              cudaGetErrorString(err));
}

}  // namespace scorefast
