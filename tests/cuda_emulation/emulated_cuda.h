// CUDA's execution model on CPU threads, so that tests can run a kernel's own source without a GPU: one
// std::thread per CUDA thread, a std::barrier per block for __syncthreads, one per warp for the shuffles, one per
// thread-block cluster for its barrier (whole, or split into arrive and wait; with map_shared_rank into the other
// blocks' shared memory), one for the whole grid for cooperative_groups' grid sync, and asynchronous copies that
// land at their wait. Enough of CUDA for the persistent and fused-step kernels (csrc/cuda/persistent_device.cuh,
// step_product.cuh); shared memory starts as NaN, as a reminder that CUDA's starts undefined. Memory ordering is
// the CPU's, made strong by the barriers, so it cannot show a missing L1 bypass or fence. A launch a GPU would
// refuse (too much shared memory, too many threads, too large a cluster), and an asynchronous copy that it would
// fault on (misaligned), fail the launch, and so does one whose threads have not all finished after ten minutes
// (some never reaching a barrier that others wait at); reads and writes past a buffer, and misaligned 16-byte vector
// accesses, show under the sanitizers (RNNFAST_SANITIZE=1, tests/test_cuda_emulation.py). Include it after torch's
// headers and before the kernels'.
#pragma once

#define RNNFAST_CUDA_EMULATION 1

#include <algorithm>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

struct alignas(16) float4 {
  float x, y, z, w;
};

struct alignas(16) double2 {
  double x, y;
};

using std::max;
using std::min;

namespace rnnfast {
namespace emulation {

constexpr int kWarpSize = 32;

struct Warp {
  std::barrier<> barrier{kWarpSize};
  float values[kWarpSize];
};

struct Block {
  Block(unsigned threads, size_t smem_bytes)
      : barrier(threads),
        smem((smem_bytes + sizeof(float) - 1) / sizeof(float), std::numeric_limits<float>::quiet_NaN()) {
    for (unsigned w = 0; w < threads / kWarpSize; ++w) warps.push_back(std::make_unique<Warp>());
  }
  std::barrier<> barrier;
  std::vector<float> smem;  // float-aligned, which is all the persistent kernels ask of it
  std::vector<std::unique_ptr<Warp>> warps;
};

struct Cluster {
  explicit Cluster(std::ptrdiff_t threads) : barrier(threads) {}
  std::barrier<> barrier;
  std::vector<Block*> blocks;  // by rank
};

struct ThreadContext {
  Block* block = nullptr;
  Cluster* cluster = nullptr;
  unsigned rank = 0;  // the block's rank in its cluster
  std::optional<std::barrier<>::arrival_token> cluster_arrival;  // between barrier_arrive and barrier_wait
  std::barrier<>* grid = nullptr;
  // cuda_pipeline's asynchronous copies, (destination, source, bytes): issued since the last commit, and the
  // committed batches, oldest first, none of which has landed yet.
  struct Copy {
    void* to;
    const void* from;
    size_t bytes;
  };
  std::vector<Copy> copies_issued;
  std::vector<std::vector<Copy>> copies_committed;
};

inline thread_local ThreadContext current;

// What a GPU would fault on and the CPU runs through (a misaligned asynchronous copy): the first such fault of a
// launch, which launch() raises once every thread has finished.
inline std::mutex fault_mutex;
inline std::string fault;

inline void report_fault(const std::string& what) {
  const std::lock_guard<std::mutex> lock(fault_mutex);
  if (fault.empty()) fault = what;
}

template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(current.block->smem.data());
}

// Runs kernel(params) on a grid of grid.x * grid.y blocks of `threads` threads (a multiple of the warp size),
// all at once, as a cooperative launch would, in clusters of cluster_size blocks along x (which divides grid.x);
// returns when every thread has finished, or fails if some have not after kHangSeconds.
template <typename Params>
void launch(void (*kernel)(Params), const Params& params, dim3 grid, unsigned threads, size_t smem_bytes,
            unsigned cluster_size = 1) {
  // What a GPU refuses to launch: the limits of the largest GPU the kernels are built for (sm_90: 227 KB of
  // shared memory a block, 1024 threads, clusters of up to 8 blocks without the non-portable opt-in).
  TORCH_CHECK(smem_bytes <= 227 * 1024 && threads <= 1024 && threads % kWarpSize == 0 && cluster_size >= 1 &&
                  cluster_size <= 8 && grid.x % cluster_size == 0 && grid.y <= 65535,
              "emulated CUDA: a launch a GPU would refuse: ", smem_bytes, " bytes of shared memory, ", threads,
              " threads, clusters of ", cluster_size, ", grid ", grid.x, " x ", grid.y);
  const unsigned blocks = grid.x * grid.y;
  auto grid_barrier = std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(blocks) * threads);
  std::vector<std::unique_ptr<Block>> states;
  for (unsigned b = 0; b < blocks; ++b) states.push_back(std::make_unique<Block>(threads, smem_bytes));
  std::vector<std::unique_ptr<Cluster>> clusters;
  for (unsigned b = 0; b < blocks; b += cluster_size) {
    clusters.push_back(std::make_unique<Cluster>(static_cast<std::ptrdiff_t>(cluster_size) * threads));
    for (unsigned r = 0; r < cluster_size; ++r) clusters.back()->blocks.push_back(states[b + r].get());
  }
  // How many threads have finished; shared with them, so that it outlives a launch given up on (below).
  struct Finished {
    std::mutex mutex;
    std::condition_variable changed;
    size_t count = 0;
  };
  const auto finished = std::make_shared<Finished>();
  fault.clear();
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(blocks) * threads);
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      const unsigned index = by * grid.x + bx;
      for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([kernel, params, grid, threads, bx, by, t, block = states[index].get(),
                           cluster = clusters[index / cluster_size].get(), rank = index % cluster_size,
                           grid_sync = grid_barrier.get(), finished] {
          threadIdx = dim3(t);
          blockIdx = dim3(bx, by);
          blockDim = dim3(threads);
          gridDim = dim3(grid.x, grid.y);
          current.block = block;
          current.cluster = cluster;
          current.rank = rank;
          current.grid = grid_sync;
          kernel(params);
          {
            const std::lock_guard<std::mutex> lock(finished->mutex);
            ++finished->count;
          }
          finished->changed.notify_all();
        });
      }
    }
  }
  // A kernel some of whose threads never reach a barrier that the others wait at never finishes (on a GPU it hangs
  // or faults too). Past kHangSeconds, far beyond any launch of the tests even under the sanitizers, the launch is
  // given up on and fails: its threads are left blocked, with the blocks and barriers they wait at.
  constexpr int kHangSeconds = 600;
  bool all_finished = false;
  {
    std::unique_lock<std::mutex> lock(finished->mutex);
    all_finished = finished->changed.wait_for(lock, std::chrono::seconds(kHangSeconds),
                                              [&] { return finished->count == pool.size(); });
  }
  if (!all_finished) {
    for (auto& thread : pool) thread.detach();
    (void)grid_barrier.release();
    for (auto& state : states) (void)state.release();
    for (auto& cluster : clusters) (void)cluster.release();
    TORCH_CHECK(false, "emulated CUDA: a launch of ", grid.x, " x ", grid.y, " blocks of ", threads,
                " threads still running after ", kHangSeconds, " s: a barrier that some threads never reach?");
  }
  for (auto& thread : pool) thread.join();
  TORCH_CHECK(fault.empty(), "emulated CUDA: ", fault);
}

}  // namespace emulation
}  // namespace rnnfast

inline void __syncthreads() { rnnfast::emulation::current.block->barrier.arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned /*mask*/, float value, int lane_mask) {
  auto& warp = *rnnfast::emulation::current.block->warps[threadIdx.x / rnnfast::emulation::kWarpSize];
  const unsigned lane = threadIdx.x % rnnfast::emulation::kWarpSize;
  warp.values[lane] = value;
  warp.barrier.arrive_and_wait();
  const float other = warp.values[lane ^ static_cast<unsigned>(lane_mask)];
  warp.barrier.arrive_and_wait();  // every lane has read before any overwrites its slot again
  return other;
}

template <typename T>
T __ldcg(const T* p) {
  return *p;
}

// cuda_pipeline's asynchronous copies from global to shared memory. A copy lands only when a wait takes its batch,
// so a kernel that reads its destination before waiting reads what was there before (NaN, at first).
// CUDA copies 4, 8 or 16 bytes, from and to addresses aligned to that size.
inline void __pipeline_memcpy_async(void* to, const void* from, size_t bytes) {
  const auto misaligned = [bytes](const void* address) { return reinterpret_cast<uintptr_t>(address) % bytes != 0; };
  if ((bytes != 4 && bytes != 8 && bytes != 16) || misaligned(to) || misaligned(from)) {
    rnnfast::emulation::report_fault("__pipeline_memcpy_async of " + std::to_string(bytes) + " bytes from " +
                                     std::to_string(reinterpret_cast<uintptr_t>(from)) + " to " +
                                     std::to_string(reinterpret_cast<uintptr_t>(to)));
    return;
  }
  rnnfast::emulation::current.copies_issued.push_back({to, from, bytes});
}
inline void __pipeline_commit() {
  auto& current = rnnfast::emulation::current;
  current.copies_committed.push_back(std::move(current.copies_issued));
  current.copies_issued.clear();
}
// Lands every committed batch but the newest `prior`.
inline void __pipeline_wait_prior(size_t prior) {
  auto& batches = rnnfast::emulation::current.copies_committed;
  while (batches.size() > prior) {
    for (const auto& copy : batches.front()) std::memcpy(copy.to, copy.from, copy.bytes);
    batches.erase(batches.begin());
  }
}

namespace cooperative_groups {
struct grid_group {
  void sync() { rnnfast::emulation::current.grid->arrive_and_wait(); }
};
inline grid_group this_grid() { return {}; }

struct cluster_group {
  void sync() { rnnfast::emulation::current.cluster->barrier.arrive_and_wait(); }
  struct arrival_token {};
  arrival_token barrier_arrive() const {
    auto& current = rnnfast::emulation::current;
    current.cluster_arrival.emplace(current.cluster->barrier.arrive());
    return {};
  }
  void barrier_wait() const {
    auto& current = rnnfast::emulation::current;
    current.cluster->barrier.wait(std::move(*current.cluster_arrival));
    current.cluster_arrival.reset();
  }
  unsigned block_rank() const { return rnnfast::emulation::current.rank; }
  // The address in block `rank`'s shared memory that `address` has in this block's.
  template <typename T>
  T* map_shared_rank(T* address, unsigned rank) const {
    const auto& self = rnnfast::emulation::current.block->smem;
    auto& other = rnnfast::emulation::current.cluster->blocks[rank]->smem;
    const auto offset = reinterpret_cast<const char*>(address) - reinterpret_cast<const char*>(self.data());
    return reinterpret_cast<T*>(reinterpret_cast<char*>(other.data()) + offset);
  }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cooperative_groups
