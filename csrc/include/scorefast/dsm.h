// Denoising score matching, fused: the noise z of the contract is regenerated from
// (seed, step, sample) wherever it is needed, never stored.
//   perturb:  x_tilde = x + sigma_b z
//   loss:     l_b = 1/2 sigma_b^p ||s_b + z_b / sigma_b||^2   (score form)
//             l_b = ||eps_b - z_b||^2                         (eps form)
//   backward: dl/ds = g_b sigma_b^p (s + z / sigma_b),  dl/deps = 2 g_b (eps - z)
// Torch-free: shared by the CPU kernels and the CUDA launchers.
#pragma once

#include <cstdint>

#include "scorefast/storage.h"

namespace scorefast {

struct DsmArgs {
  int64_t batch = 0;                          // B: size of dim 0 (samples)
  int64_t sample_size = 0;                    // D: elements per sample
  StorageType dtype = StorageType::kFloat32;  // of the data/prediction and of tensor outputs

  const void* input = nullptr;  // [B, D]: x (perturb) or the prediction (loss, backward)
  const void* sigma = nullptr;  // [B] math type (double for float64 input, float otherwise)
  double power = 2.0;           // p of the weighting sigma^p (score form)
  bool eps_form = false;        // predict the noise instead of the score
  uint64_t seed = 0;
  uint32_t step = 0;
  uint64_t particle_offset = 0;

  const void* grad_per_sample = nullptr;  // [B] math type: dL/dl_b (backward)
  void* out = nullptr;                    // perturb: [B, D] dtype; loss: [B] math type; backward: [B, D] dtype
};

}  // namespace scorefast
