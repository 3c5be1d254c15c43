// CPU kernel table: the same kernels compiled once per instruction set, picked at run
// time (AVX2+FMA where the CPU has it, a portable build otherwise). Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scorefast/chain.h"
#include "scorefast/diffusion.h"
#include "scorefast/dsm.h"
#include "scorefast/dsm_vp.h"
#include "scorefast/gmm.h"
#include "scorefast/langevin.h"
#include "scorefast/storage.h"

namespace scorefast {
namespace cpu {

// A new op's CPU kernels take a slot here and an entry in isa_kernel_table.inc.
struct KernelTable {
  const char* isa;
  // z for the flattened elements [begin, end) of a [P, D] tensor: float32, rounded to out's type.
  void (*normal_fill)(void* out, StorageType type, int64_t particle_size, uint64_t seed, uint32_t step,
                      uint64_t particle_offset, int64_t begin, int64_t end);
  // langevin_step over the flattened elements [begin, end).
  void (*langevin)(const LangevinArgs& args, int64_t begin, int64_t end);
  // Per-particle score multiplier min(1, max_norm / ||g_p||) for particles [begin, end).
  void (*score_clip_factors)(const LangevinArgs& args, double max_norm, void* factors, int64_t begin, int64_t end);
  // gmm_score for points [begin, end).
  void (*gmm_score)(const GmmArgs& args, int64_t begin, int64_t end);
  // Denoising score matching for samples [begin, end): perturb, per-sample loss, gradient.
  void (*dsm_perturb)(const DsmArgs& args, int64_t begin, int64_t end);
  void (*dsm_loss)(const DsmArgs& args, int64_t begin, int64_t end);
  void (*dsm_backward)(const DsmArgs& args, int64_t begin, int64_t end);
  // gmm_chain for particles [begin, end).
  void (*gmm_chain)(const ChainArgs& args, int64_t begin, int64_t end);
  // reverse_step over the flattened elements [begin, end).
  void (*reverse_step)(const ReverseArgs& args, int64_t begin, int64_t end);
  // Per-particle float64 ||g_p||^2 and, when z_sq is set, ||z_p||^2 for particles [begin, end).
  void (*diffusion_norms)(const ReverseArgs& args, double* g_sq, double* z_sq, int64_t begin, int64_t end);
  // The per-sample snr_corrector_step of particles [begin, end), its step sizes into step_sizes.
  void (*snr_corrector)(const ReverseArgs& args, double snr, void* step_sizes, int64_t begin, int64_t end);
  // The diffusion forward process and loss for samples [begin, end): perturb, per-sample loss, gradient.
  void (*dsm_vp_perturb)(const DsmVpArgs& args, int64_t begin, int64_t end);
  void (*dsm_vp_loss)(const DsmVpArgs& args, int64_t begin, int64_t end);
  void (*dsm_vp_backward)(const DsmVpArgs& args, int64_t begin, int64_t end);
};

// One table per ISA build (isa_generic.cpp, isa_avx2.cpp, isa_avx512.cpp), each defined by
// isa_kernel_table.inc.
namespace generic {
extern const KernelTable kKernels;
}
#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 {
extern const KernelTable kKernels;
}
namespace avx512 {
extern const KernelTable kKernels;
}
#endif

// The table in use ("auto" = the fastest this CPU supports).
const KernelTable& kernels();
// Selects "auto", "generic", "avx2" or "avx512"; returns false if the CPU cannot run it.
bool select_isa(const std::string& name);
std::vector<std::string> supported_isas();

}  // namespace cpu
}  // namespace scorefast
