// The CUDA emulator's runtime (see cuda_runtime.h): blocks run one after another on the
// calling thread; the threads of a block are ucontext fibers switched only at barriers.
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_runtime.h"

namespace sf_emu {
namespace {

// Kernels keep small per-thread state; 256 KiB of stack each is ample and only touched
// pages cost memory.
constexpr size_t kStackBytes = 256 * 1024;

enum class FiberState { kReady, kBlockBarrier, kWarpBarrier, kDone };

struct Fiber {
  ucontext_t context;
  dim3 index;
  unsigned int linear = 0;
  FiberState state = FiberState::kReady;
  uint64_t wait_generation = 0;
};

struct BlockRun {
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
  unsigned int live = 0;
  unsigned int block_arrived = 0;
  uint64_t block_generation = 0;
  std::vector<uint32_t> warp_live;  // lanes present and not exited
  std::vector<unsigned int> warp_arrived;
  std::vector<uint64_t> warp_generation;
  std::vector<uint32_t> warp_mask;  // the mask of the warp's pending barrier
  std::vector<uint64_t> lane_slots;
  std::string error;
};

thread_local BlockRun* g_run = nullptr;
thread_local LaunchState g_launch;
thread_local cudaError_t g_last_error = cudaSuccess;

std::mutex g_limits_mutex;
std::map<const void*, size_t> g_smem_limits;

char* fiber_stack(size_t i) {
  // One reserved region per OS thread, reused by every launch.
  thread_local char* base = nullptr;
  if (base == nullptr) {
    void* p = mmap(nullptr, kStackBytes * kMaxThreadsPerBlock, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("CUDA emulator: cannot reserve fiber stacks");
    base = static_cast<char*>(p);
  }
  return base + i * kStackBytes;
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

unsigned int warp_of(const Fiber* f) { return f->linear / 32; }

void wait_here(BlockRun* run, FiberState state, uint64_t generation) {
  Fiber* f = run->current;
  f->state = state;
  f->wait_generation = generation;
  swapcontext(&f->context, &run->scheduler);
}

void release_block_barrier_if_complete(BlockRun* run) {
  if (run->block_arrived > 0 && run->block_arrived == run->live) {
    run->block_arrived = 0;
    ++run->block_generation;
  }
}

void fiber_entry() {
  BlockRun* run = g_run;
  Fiber* f = run->current;
  try {
    (*run->body)();
  } catch (const std::exception& e) {
    if (run->error.empty()) run->error = e.what();
  } catch (...) {
    if (run->error.empty()) run->error = "unknown exception";
  }
  f->state = FiberState::kDone;
  --run->live;
  const unsigned int w = warp_of(f);
  run->warp_live[w] &= ~(1u << (f->linear % 32));
  if (run->warp_arrived[w] > 0 && (run->warp_mask[w] >> (f->linear % 32) & 1u) && run->error.empty())
    run->error = "a thread exited while other lanes of its warp wait for it in __syncwarp or a shuffle";
  // CUDA lets exited threads drop out of later __syncthreads.
  release_block_barrier_if_complete(run);
  // Returning resumes uc_link, the scheduler.
}

std::string describe_block(const dim3& b) {
  return "(" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) + ")";
}

void run_block(BlockRun& run, unsigned int threads) {
  run.live = threads;
  run.block_arrived = 0;
  const unsigned int warps = (threads + 31) / 32;
  run.warp_live.assign(warps, 0xffffffffu);
  if (threads % 32 != 0) run.warp_live[warps - 1] = (1u << (threads % 32)) - 1u;
  run.warp_arrived.assign(warps, 0);
  run.warp_generation.assign(warps, 0);
  run.warp_mask.assign(warps, 0);
  run.lane_slots.assign(static_cast<size_t>(warps) * 32, 0);
  const dim3 bd = g_launch.block_dim;
  for (unsigned int i = 0; i < threads; ++i) {
    Fiber& f = run.fibers[i];
    f.linear = i;
    f.index = dim3(i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y));
    f.state = FiberState::kReady;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = fiber_stack(i);
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &run.scheduler;
    makecontext(&f.context, fiber_entry, 0);
  }
  // SCOREFAST_CUDA_EMULATOR_REVERSE=1 runs the threads between barriers last to first: a
  // race-free kernel gives the same bits either way, one missing a barrier need not.
  const char* order = std::getenv("SCOREFAST_CUDA_EMULATOR_REVERSE");
  const bool reverse = order != nullptr && order[0] != '\0' && order[0] != '0';
  for (;;) {
    bool progressed = false, all_done = true;
    for (unsigned int n = 0; n < threads && run.error.empty(); ++n) {
      Fiber& f = run.fibers[reverse ? threads - 1 - n : n];
      if (f.state == FiberState::kDone) continue;
      all_done = false;
      if (f.state == FiberState::kBlockBarrier && run.block_generation != f.wait_generation)
        f.state = FiberState::kReady;
      if (f.state == FiberState::kWarpBarrier && run.warp_generation[warp_of(&f)] != f.wait_generation)
        f.state = FiberState::kReady;
      if (f.state != FiberState::kReady) continue;
      run.current = &f;
      swapcontext(&run.scheduler, &f.context);
      progressed = true;
    }
    if (!run.error.empty() || all_done) return;
    if (!progressed) {
      run.error = "deadlock: " + std::to_string(run.live) +
                  " threads wait at barriers that can never complete (a barrier in divergent code?)";
      return;
    }
  }
}

}  // namespace

LaunchState& launch_state() { return g_launch; }

const dim3& thread_idx() {
  if (g_run == nullptr) fail("CUDA emulator: threadIdx read outside a kernel");
  return g_run->current->index;
}

int lane_id() { return static_cast<int>(g_run->current->linear % 32); }

void sync_block() {
  BlockRun* run = g_run;
  if (++run->block_arrived == run->live) {
    run->block_arrived = 0;
    ++run->block_generation;
    return;
  }
  wait_here(run, FiberState::kBlockBarrier, run->block_generation);
}

void sync_warp(unsigned int mask) {
  BlockRun* run = g_run;
  Fiber* f = run->current;
  const unsigned int w = warp_of(f), lane = f->linear % 32;
  if (!(mask >> lane & 1u)) fail("__syncwarp or shuffle: the mask leaves out the calling lane " + std::to_string(lane));
  if (mask & ~run->warp_live[w])
    fail("__syncwarp or shuffle: the mask names lanes that exited or do not exist (mask " + std::to_string(mask) +
         ", live lanes " + std::to_string(run->warp_live[w]) + ")");
  if (run->warp_arrived[w] == 0) {
    run->warp_mask[w] = mask;
  } else if (run->warp_mask[w] != mask) {
    fail("__syncwarp or shuffle: lanes of one warp synchronise with different masks at once");
  }
  if (++run->warp_arrived[w] == static_cast<unsigned int>(__builtin_popcount(mask))) {
    run->warp_arrived[w] = 0;
    ++run->warp_generation[w];
    return;
  }
  wait_here(run, FiberState::kWarpBarrier, run->warp_generation[w]);
}

uint64_t exchange_lane(unsigned int mask, uint64_t bits, int source_lane) {
  BlockRun* run = g_run;
  const unsigned int w = warp_of(run->current);
  uint64_t* slots = run->lane_slots.data() + static_cast<size_t>(w) * 32;
  slots[run->current->linear % 32] = bits;
  sync_warp(mask);
  if (source_lane < 0 || source_lane >= 32 || !(mask >> source_lane & 1u))
    fail("shuffle reads lane " + std::to_string(source_lane) + ", which is not in the mask");
  const uint64_t out = slots[source_lane];
  sync_warp(mask);  // no lane overwrites its slot before every lane has read
  return out;
}

cudaError_t run_grid(const void* kernel, dim3 grid, dim3 block, size_t dynamic_smem,
                     const std::function<void()>& body) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > static_cast<uint64_t>(kMaxThreadsPerBlock) || grid.x == 0 || grid.y == 0 ||
      grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    return cudaErrorInvalidConfiguration;
  if (dynamic_smem > dynamic_smem_limit(kernel)) return cudaErrorInvalidValue;
  // Dynamic shared memory starts as garbage on a GPU: fill it with NaN bytes so a read
  // before a write shows up.
  std::unique_ptr<double[]> smem(new double[(dynamic_smem + 15) / 8 + 2]);
  std::memset(smem.get(), 0xff, ((dynamic_smem + 15) / 8 + 2) * sizeof(double));
  BlockRun run;
  run.fibers.resize(static_cast<size_t>(threads));
  run.body = &body;
  BlockRun* outer = g_run;
  const LaunchState outer_launch = g_launch;
  g_run = &run;
  g_launch.grid_dim = grid;
  g_launch.block_dim = block;
  g_launch.dynamic_smem = reinterpret_cast<unsigned char*>(smem.get());
  for (unsigned int z = 0; z < grid.z; ++z)
    for (unsigned int y = 0; y < grid.y; ++y)
      for (unsigned int x = 0; x < grid.x; ++x) {
        g_launch.block_idx = dim3(x, y, z);
        run_block(run, static_cast<unsigned int>(threads));
        if (!run.error.empty()) {
          g_run = outer;
          g_launch = outer_launch;
          fail("CUDA emulator: kernel failed in block " + describe_block(dim3(x, y, z)) + ": " + run.error);
        }
      }
  g_run = outer;
  g_launch = outer_launch;
  return cudaSuccess;
}

void set_last_error(cudaError_t err) {
  if (err != cudaSuccess) g_last_error = err;
}

cudaError_t take_last_error() {
  const cudaError_t err = g_last_error;
  g_last_error = cudaSuccess;
  return err;
}

int emulated_sm_count() {
  const char* env = std::getenv("SCOREFAST_CUDA_EMULATOR_SMS");
  const int n = env != nullptr ? std::atoi(env) : 0;
  return n > 0 ? n : 2;
}

size_t dynamic_smem_limit(const void* kernel) {
  const std::lock_guard<std::mutex> lock(g_limits_mutex);
  const auto it = g_smem_limits.find(kernel);
  return it != g_smem_limits.end() ? it->second : kDefaultDynamicSmem;
}

void set_dynamic_smem_limit(const void* kernel, size_t bytes) {
  const std::lock_guard<std::mutex> lock(g_limits_mutex);
  g_smem_limits[kernel] = bytes;
}

}  // namespace sf_emu

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = sf_emu::emulated_sm_count();
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = static_cast<int>(sf_emu::kDefaultDynamicSmem);
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(sf_emu::kMaxSmemOptin);
      return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction:
      return "cudaErrorInvalidDeviceFunction";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDeviceFunction:
      return "invalid device function";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
  }
  return "unknown error";
}
