// AVX2 + FMA build of the CPU kernels, used only when the CPU reports both (cpu_dispatch.cpp).
// Standard headers come before the target pragma so no library inline function is
// compiled for AVX2 here and then picked by the linker for the whole program.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu_kernels.h"
#include "scorefast/langevin.h"
#include "scorefast/philox.h"
#include "scorefast/storage.h"

#if defined(__x86_64__) || defined(_M_X64)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include <immintrin.h>

namespace scorefast {
namespace cpu {
namespace avx2 {

#include "noise_kernels.h"
#include "noise_avx2.h"
#include "langevin_kernels.h"
#include "gmm_kernels.h"
#include "dsm_kernels.h"
#include "chain_kernels.h"

}  // namespace avx2

const KernelTable kAvx2Kernels = {
    "avx2",
    avx2::normal_fill_range,
    avx2::langevin_range,
    avx2::score_clip_factors_range,
    avx2::gmm_score_range,
    avx2::dsm_perturb_range,
    avx2::dsm_loss_range,
    avx2::dsm_backward_range,
    avx2::gmm_chain_range,
};

}  // namespace cpu
}  // namespace scorefast

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // x86-64
