// Build and CPU facts exposed to Python through pybind11. The op schemas are declared in
// Python (scorefast/ops/, one module per op family); csrc/cpu and csrc/cuda register kernels.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>  // at::Tensor and at::ScalarType to and from Python

#include <string>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/output_cache.h"

namespace {

bool built_with_cuda() {
#if defined(SCOREFAST_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "scorefast compiled kernels (ops are under torch.ops.scorefast)";
  m.def("built_with_cuda", &built_with_cuda, "Whether the CUDA kernels were compiled in.");
  m.def(
      "cpu_isa", [] { return std::string(scorefast::cpu::kernels().isa); },
      "Instruction set of the CPU kernels in use ('avx2' or 'generic').");
  m.def("supported_cpu_isas", &scorefast::cpu::supported_isas, "CPU kernel builds this machine can run.");
  m.def("select_cpu_isa", &scorefast::cpu::select_isa, pybind11::arg("name"),
        "Use the 'auto', 'generic' or 'avx2' CPU kernels; returns False if unsupported here.");
  m.def(
      "empty_cpu_output",
      [](const std::vector<int64_t>& sizes, at::ScalarType dtype) {
        return scorefast::cpu::cached_empty(sizes, dtype);
      },
      pybind11::arg("sizes"), pybind11::arg("dtype"),
      "An uninitialised contiguous CPU tensor; 8 MB or more from the cache of released outputs.");
}
