// gmm_chain: T Langevin steps for a Gaussian-mixture target in one kernel, each particle's
// state kept local between steps (see scorefast/gmm.h for the mixture's kernel form).
//   ULA / annealed:  x <- x + a_t s_t(x) + sqrt(2 a_t) z(seed, t0 + t, p)
//                    s_t = score of the mixture noised by sigma2_t (0: the mixture itself)
//   MALA:            y = x + a_t s(x) + sqrt(2 a_t) z, accepted when
//                    log u < log p(y) - log p(x) - |x - y - a_t s(y)|^2 / (4 a_t) + |z|^2 / 2,
//                    u = uniform(word 0 of Philox group ceil(D/4)) at (p, t0 + t): the group
//                    after the particle's normals. A NaN ratio is a rejection.
// The noise follows the contract, so the chain equals T single langevin_step calls.
#pragma once

#include <cstdint>

#include "scorefast/gmm.h"

namespace scorefast {

struct ChainArgs {
  GmmArgs mixture;                  // x / score / log_prob fields unused; var/factor in per-point form
  int64_t num_steps = 0;            // T
  const void* step_size = nullptr;  // [T] math type: a_t
  const void* sigma2 = nullptr;     // [T] math type: the noise level of step t's score
  bool mala = false;
  uint64_t seed = 0;
  uint32_t step_offset = 0;  // t0: the contract step of the first step
  uint64_t particle_offset = 0;
  int64_t trajectory_every = 0;  // k > 0: state after every k-th step to trajectory
  void* trajectory = nullptr;    // [T / k, N, D] of the state's storage type
  void* x = nullptr;             // [N, D] state, updated in place (storage type mixture.dtype)
  int64_t* accepted = nullptr;   // [N] MALA acceptances
};

}  // namespace scorefast
