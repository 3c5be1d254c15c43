// The diffusion forward process and loss (VP and VE), fused: the noise z of the contract is
// regenerated from (seed, step, sample) wherever it is needed, never stored.
//   perturb:  x_t = alpha_b x + sigma_b z
//   loss:     l_b = w_b ||pred_b - a_b z_b - c_b x_b||^2   (no c x term without x)
//   backward: dl/dpred = g_b (2 w_b) (pred - a_b z - c_b x)
// Torch-free: shared by the CPU kernels and the CUDA launchers.
#pragma once

#include <cstdint>

#include "scorefast/storage.h"

namespace scorefast {

struct DsmVpArgs {
  int64_t batch = 0;                          // B: size of dim 0 (samples)
  int64_t sample_size = 0;                    // D: elements per sample
  StorageType dtype = StorageType::kFloat32;  // of the data, the prediction and tensor outputs

  const void* input = nullptr;  // [B, D]: x (perturb) or the prediction (loss, backward)
  const void* data = nullptr;   // [B, D] or null: the clean data x of the loss's c x term
  // Per-sample coefficients [B] of the math type (double for float64 storage, float otherwise):
  // perturb: coef_a = alpha, coef_c = sigma; loss and backward: a and c.
  const void* coef_a = nullptr;
  const void* coef_c = nullptr;
  const double* weight = nullptr;  // [B] w (loss, backward)
  uint64_t seed = 0;
  uint32_t step = 0;
  uint64_t particle_offset = 0;

  const void* grad_per_sample = nullptr;  // [B] math type: dL/dl_b (backward)
  void* out = nullptr;                    // perturb, backward: [B, D] dtype; loss: [B] math type
};

}  // namespace scorefast
