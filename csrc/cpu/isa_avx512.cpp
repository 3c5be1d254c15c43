// AVX-512 (F, VL, BW, DQ) build of the same kernels as isa_avx2.cpp: 32 vector registers,
// three-input logic and masked operations for the compiler. Used only when the CPU reports them
// (cpu_dispatch.cpp).
// Standard headers come before the target pragma so no library inline function is
// compiled for AVX-512 here and then picked by the linker for the whole program.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu_kernels.h"
#include "scorefast/langevin.h"
#include "scorefast/philox.h"
#include "scorefast/storage.h"

#if defined(__x86_64__) || defined(_M_X64)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq")
#endif

#define SCOREFAST_ISA_AVX512 1
#define SCOREFAST_ISA_NS avx512
#define SCOREFAST_ISA_NAME "avx512"
#include "isa_x86_kernels.inc"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // x86-64
