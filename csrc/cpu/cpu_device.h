// The CPU's device policy for the op templates (csrc/op_wrappers.h), and the CPU check the
// glue of every op (csrc/cpu/<op>_cpu.cpp) shares.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include "memory_hints.h"

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

  // A large fresh output asks for huge pages (first-touch page faults cost more than the
  // kernel's own work).
  static at::Tensor new_output(const at::Tensor& like) {
    at::Tensor out = at::empty_like(like, at::MemoryFormat::Contiguous);
    cpu::advise_huge_pages(out.data_ptr(), out.nbytes());
    return out;
  }
};

}  // namespace scorefast
