// The CPU's device policy for the op templates (csrc/op_wrappers.h), and the CPU check the
// glue of every op (csrc/cpu/<op>_cpu.cpp) shares.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include "output_cache.h"

namespace scorefast {

struct CpuDevice {
  // The kernels take the step by value: a *_counter_ op reads its step tensor on the host.
  static constexpr bool kKernelReadsStepTensor = false;

  // One device: nothing to make current.
  struct Guard {
    explicit Guard(const c10::Device&) {}
  };

  static void check(const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor for the CPU kernel, got ", t.device());
  }

  // Large outputs come from a cache of released ones, on huge pages (first-touch page faults
  // cost more than the kernel's own work): output_cache.h.
  static at::Tensor new_output(const at::Tensor& like) { return cpu::cached_empty_like(like); }
};

}  // namespace scorefast
