// AVX2 + FMA build of the CPU kernels, used only when the CPU reports both (cpu_dispatch.cpp).
// Standard headers come before the target pragma so no library inline function is
// compiled for AVX2 here and then picked by the linker for the whole program.
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
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#define SCOREFAST_ISA_NS avx2
#define SCOREFAST_ISA_NAME "avx2"
#include "isa_x86_kernels.inc"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // x86-64
