// The variants of the ops that write into a tensor they are given, written once for every
// device: an op_ on a non-contiguous x runs through a contiguous temporary, and a *_counter_
// op takes its step from a one-element int64 tensor. The entry points in csrc/<op>_op.h are
// templates over a device's glue (csrc/cpu/<op>_cpu.cpp, csrc/cuda/<op>_cuda.cpp): the op's
// run functions there, and the device policy they derive from (cpu/cpu_device.h,
// cuda/cuda_device.h):
//
//   check(t, name)          t is on this device
//   Guard                   constructed from a c10::Device: makes it current while alive
//   new_output(like)        an uninitialised contiguous tensor like `like` (out-of-place results;
//                           on the CPU a released one of the same size may be reused)
//   kKernelReadsStepTensor  whether the kernels read a *_counter_ op's step from device
//                           memory when they run (CUDA: a captured graph replays whatever
//                           step the tensor then holds) or take it by value (read here)
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include <cstdint>

#include "op_checks.h"

namespace scorefast {

// The step the kernels draw their noise for: `value`, or, when `counter` is set, the int64
// in device memory it points to, read when the kernel runs.
struct NoiseStep {
  int64_t value = 0;
  const int64_t* counter = nullptr;
};

// The step of a *_counter_ op, from its step tensor (checked against `like`, the tensor the
// op writes, called like_name in messages).
template <typename Device>
NoiseStep noise_step_of(const at::Tensor& step, const at::Tensor& like, const char* like_name) {
  check_step_tensor(step, like, like_name);
  if constexpr (Device::kKernelReadsStepTensor) {
    return {0, step.const_data_ptr<int64_t>()};
  } else {
    return {step.item<int64_t>(), nullptr};
  }
}

// The result of an in-place op in x: run(out) writes it into a contiguous tensor of x's
// shape, x itself when x is contiguous (the kernels of the in-place ops read each element
// before writing it), else a temporary copied back.
template <typename Device, typename Run>
void run_in_place(at::Tensor& x, Run&& run) {
  if (x.is_contiguous()) {
    run(x);
    return;
  }
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  run(out);
  const typename Device::Guard guard(x.device());
  x.copy_(out);
}

}  // namespace scorefast
