// Run-time choice of the CPU kernel build. SCOREFAST_CPU_ISA=generic|avx2|avx512 overrides
// the default at load time; scorefast._C.select_cpu_isa() changes it later.
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu_kernels.h"

namespace scorefast {
namespace cpu {
namespace {

bool cpu_has_avx2_fma() {
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
  return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

const KernelTable* table_for(const std::string& name) {
  if (name == "generic") return &generic::kKernels;
#if defined(__x86_64__) || defined(_M_X64)
  if (name == "avx2") return cpu_has_avx2_fma() ? &avx2::kKernels : nullptr;
  if (name == "avx512") return cpu_has_avx512() ? &avx512::kKernels : nullptr;
  if (name == "auto")
    return cpu_has_avx512() ? &avx512::kKernels : cpu_has_avx2_fma() ? &avx2::kKernels : &generic::kKernels;
#else
  if (name == "auto") return &generic::kKernels;
#endif
  return nullptr;
}

const KernelTable* initial_table() {
  const char* env = std::getenv("SCOREFAST_CPU_ISA");
  const KernelTable* t = env ? table_for(env) : nullptr;
  return t ? t : table_for("auto");
}

std::atomic<const KernelTable*>& current() {
  static std::atomic<const KernelTable*> table{initial_table()};
  return table;
}

}  // namespace

const KernelTable& kernels() { return *current().load(std::memory_order_acquire); }

bool select_isa(const std::string& name) {
  const KernelTable* t = table_for(name);
  if (t == nullptr) return false;
  current().store(t, std::memory_order_release);
  return true;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> out{"generic"};
  if (cpu_has_avx2_fma()) out.push_back("avx2");
  if (cpu_has_avx512()) out.push_back("avx512");
  return out;
}

}  // namespace cpu
}  // namespace scorefast
