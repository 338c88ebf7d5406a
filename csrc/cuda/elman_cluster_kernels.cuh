// The cluster plan of the Elman recurrence's persistent path (elman_cluster.cu): one launch for the whole
// sequence, W_hh held in registers rather than shared memory, and a direction's hidden units spread over the
// blocks of one thread-block cluster (sm_90), which hand each step's state to each other through distributed
// shared memory and meet at the cluster's barrier, not the whole grid's. Each thread keeps kpt weights of one
// hidden unit's row (backward: column) and sums its part of that unit's dot product; threads_per_unit threads
// share a unit and reduce with warp shuffles. Kept apart from the CUDA runtime so that tests/cuda_emulation runs
// these kernels on the CPU.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../cell_math.h"
#include "../elman_args.h"
#include "persistent_device.cuh"

namespace rnnfast {
namespace cuda {
namespace elman_cluster {

// Whether this compilation pass has thread-block clusters (sm_90 on): the kernels' device code for older GPUs
// only traps, and the host launches them only on sm_90 and later.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define RNNFAST_HAS_CLUSTERS 0
#else
#define RNNFAST_HAS_CLUSTERS 1
#endif

constexpr int kThreads = 256;
constexpr int kMaxClusterSize = 8;  // the portable limit
constexpr int kMaxRows = 4;         // batch rows of one cluster: each unit's pre-activations wait in registers
constexpr int kWeightsPerThread[] = {4, 8, 16, 32, 64};  // the register arrays compiled (kpt)

struct ClusterParams {
  float* seq;           // forward: output (T, B, D*H), pre-activations in, h_t out; backward: grad_z, dL/dh_t
                        // from above in, dL/dz_t out
  const float* out;     // backward: the forward's output (T, B, D*H)
  const float* state0;  // forward: hx (D, B, H)
  float* state;         // forward: h_n (D, B, H); backward: grad_h (D, B, H), dL/dh_n in, dL/dh_0 out
  const float* w_hh;    // (D, H, H)
  int T, B, H, D;
  int units_per_block, blocks_per_direction, batch_per_block;  // block_slice's; blocks_per_direction = cluster size
  int threads_per_unit;  // a power of two <= 32
  int padded;            // threads_per_unit * kpt: a state row's length in shared memory, zeros past H
};

// How a layer is spread: the smallest cluster whose blocks can hold their units' weights in kpt <= 64 registers a
// thread, and batch rows per cluster so that about one wave of clusters covers the batch.
struct ClusterPlan {
  bool feasible;
  int cluster_size, units_per_block, threads_per_unit, kpt, padded, batch_per_block, batch_blocks;
  int blocks_per_direction;  // = cluster_size, under the name block_slice reads
  size_t smem;
};

inline ClusterPlan plan_cluster(const ElmanSizes& s, int min_cluster_size = 1, int rows = 0) {
  ClusterPlan plan{};
  const int H = static_cast<int>(s.H), B = static_cast<int>(s.B), D = static_cast<int>(s.D);
  for (int C = min_cluster_size; C <= kMaxClusterSize && !plan.feasible; C *= 2) {
    const int U = (H + C - 1) / C;
    if (U > kThreads) continue;
    int tpu = 1;
    while (tpu < 32 && U * tpu * 2 <= kThreads) tpu *= 2;
    const int need = (H + tpu - 1) / tpu;
    for (const int kpt : kWeightsPerThread) {
      if (kpt < need) continue;
      plan = ClusterPlan{true, C, U, tpu, kpt, tpu * kpt, 0, 0, C, 0};
      break;
    }
  }
  if (!plan.feasible) return plan;
  const int groups = std::max(1, 120 / (plan.cluster_size * D));  // about the clusters an H100 or H200 runs at once
  plan.batch_per_block = rows > 0 ? rows : std::clamp((B + groups - 1) / groups, 1, kMaxRows);
  plan.batch_blocks = (B + plan.batch_per_block - 1) / plan.batch_per_block;
  plan.smem = sizeof(float) * 2 * static_cast<size_t>(plan.batch_per_block) * plan.padded;
  return plan;
}

// This thread's weight i multiplies state entry k = 4 * (q + tpu * (i / 4)) + i % 4: the tpu threads of a unit
// read tpu consecutive 16-byte chunks of a state row, which one shared-memory load of a warp serves.
__device__ __forceinline__ int state_index(int i, int q, int tpu) { return 4 * (q + tpu * (i / 4)) + i % 4; }

// Part q of sum_k w[k] * row[k] over this thread's kpt entries, then summed over the unit's tpu threads. Four
// partial sums, one per lane of the 16-byte chunks: the step's latency is this dependent chain, a quarter as long
// as one running sum's.
template <int KPT>
__device__ __forceinline__ float unit_dot(const float (&w)[KPT], const float* row, int q, int tpu) {
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int m = 0; m < KPT / 4; ++m) {
    const float4 v = *reinterpret_cast<const float4*>(row + 4 * (q + tpu * m));
    acc[0] += w[4 * m] * v.x;
    acc[1] += w[4 * m + 1] * v.y;
    acc[2] += w[4 * m + 2] * v.z;
    acc[3] += w[4 * m + 3] * v.w;
  }
  float sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (int offset = tpu / 2; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  return sum;
}

// How a step's values reach every block of the cluster, and the barrier after them. A cluster of one block (hidden
// <= 128) uses its own shared memory and __syncthreads: the cluster barrier's arrive is a release at cluster
// scope, which sm_90 carries out as a GPU-scope fence (MEMBAR.ALL.GPU) that waits for the thread's outstanding
// global loads and stores. Larger clusters split that barrier into arrive and wait, and the kernels issue their
// global traffic between the two, so that the next step's fence finds it done.
#if RNNFAST_HAS_CLUSTERS
struct StepExchange {
  int cluster_size;
  // values[index] = v in every block's copy of `values` (the caller's block's shared memory).
  __device__ __forceinline__ void publish(float* values, int index, float v) const {
    if (cluster_size == 1) {
      values[index] = v;
      return;
    }
    const auto cluster = cooperative_groups::this_cluster();
    for (int r = 0; r < cluster_size; ++r) cluster.map_shared_rank(values, r)[index] = v;
  }
  __device__ __forceinline__ void arrive() const {
    if (cluster_size > 1) (void)cooperative_groups::this_cluster().barrier_arrive();
  }
  __device__ __forceinline__ void wait() const {
    if (cluster_size > 1) {
      cooperative_groups::this_cluster().barrier_wait();
    } else {
      __syncthreads();
    }
  }
  __device__ __forceinline__ void sync() const {
    arrive();
    wait();
  }
};
#endif

// Loads this unit's entries of step t of a (T, B, D*H) sequence, one per batch row of the block.
__device__ __forceinline__ void load_rows(float (&dst)[kMaxRows], const float* seq, int t, const Slice& sl, int j,
                                          int B, int ld, int H) {
#pragma unroll
  for (int b = 0; b < kMaxRows; ++b) {
    if (b < sl.rows) dst[b] = seq[(static_cast<int64_t>(t) * B + sl.b0 + b) * ld + sl.d * H + j];
  }
}

// Stores this unit's entries of step t of a (T, B, D*H) sequence, one per batch row of the block.
__device__ __forceinline__ void store_rows(float* seq, const float (&src)[kMaxRows], int t, const Slice& sl, int j,
                                           int B, int ld, int H) {
#pragma unroll
  for (int b = 0; b < kMaxRows; ++b) {
    if (b < sl.rows) seq[(static_cast<int64_t>(t) * B + sl.b0 + b) * ld + sl.d * H + j] = src[b];
  }
}

// Two state buffers (2, rows, padded), zero, the first holding `initial` (D, B, H) rows when given.
__device__ __forceinline__ void init_state_buffers(float* buf, const float* initial, const Slice& sl, int B, int H,
                                                   int padded) {
  for (int i = threadIdx.x; i < 2 * sl.rows * padded; i += kThreads) {
    const int which = i / (sl.rows * padded), b = (i / padded) % sl.rows, k = i % padded;
    buf[i] = initial && which == 0 && k < H ? initial[(static_cast<int64_t>(sl.d) * B + sl.b0 + b) * H + k] : 0.f;
  }
}

// Per step: every thread's part of its unit's product with h_{t-1}; the unit's first thread adds the
// pre-activation, applies the activation and writes h_t into the next state buffer of every block of the
// cluster; then the barrier, in whose middle that thread stores h_t to the output and loads the next step's
// pre-activations.
template <int KPT, Activation A>
__global__ void __launch_bounds__(kThreads, 1) elman_forward_cluster_kernel(ClusterParams p) {
#if !RNNFAST_HAS_CLUSTERS
  __trap();
#else
  const StepExchange exchange{p.blocks_per_direction};
  const Slice sl = block_slice(p);
  const int H = p.H, B = p.B, ld = p.D * p.H, tpu = p.threads_per_unit;
  const int jj = threadIdx.x / tpu, q = threadIdx.x % tpu, j = sl.j0 + jj;
  const bool owner = jj < sl.units && q == 0;  // writes unit j's results
  RNNFAST_DYNAMIC_SHARED(float, smem);
  float* h_buf = smem;  // (2, rows, padded): h_{t-1} of the direction's every unit; step s reads buffer s % 2
  float w[KPT];         // W_hh[j][k] at state_index(i), zero past H and for threads without a unit
  const float* w_row = p.w_hh + (static_cast<int64_t>(sl.d) * H + j) * H;
#pragma unroll
  for (int i = 0; i < KPT; ++i) {
    const int k = state_index(i, q, tpu);
    w[i] = jj < sl.units && k < H ? w_row[k] : 0.f;
  }
  init_state_buffers(h_buf, p.state0, sl, B, H, p.padded);
  exchange.sync();  // no block writes into another's buffers before that block has set them up
  auto step_t = [&](int step) { return sl.d == 0 ? step : p.T - 1 - step; };
  const int rows_size = sl.rows * p.padded;
  // z: unit j's pre-activations at `step`, then its h_t (owner only). Loaded two steps ahead, into one of two
  // register sets (even and odd steps), so that the load has two steps to arrive.
  auto run_step = [&](int step, float (&z)[kMaxRows]) {
    const float* h_cur = h_buf + (step % 2) * rows_size;
    float* h_next = h_buf + ((step + 1) % 2) * rows_size;
#pragma unroll
    for (int b = 0; b < kMaxRows; ++b) {
      if (b >= sl.rows) break;
      const float acc = unit_dot(w, h_cur + b * p.padded, q, tpu);
      if (owner) {
        z[b] = ActivationFn<A>::forward(z[b] + acc);
        exchange.publish(h_next, b * p.padded + j, z[b]);
      }
    }
    exchange.arrive();
    if (owner) {
      store_rows(p.seq, z, step_t(step), sl, j, B, ld, H);
      if (step + 2 < p.T) load_rows(z, p.seq, step_t(step + 2), sl, j, B, ld, H);
    }
    exchange.wait();  // h_t of every unit is in every block's next buffer, and the current one is free again
  };
  float z_even[kMaxRows] = {}, z_odd[kMaxRows] = {};
  if (owner) {
    load_rows(z_even, p.seq, step_t(0), sl, j, B, ld, H);
    if (p.T > 1) load_rows(z_odd, p.seq, step_t(1), sl, j, B, ld, H);
  }
  for (int step = 0; step < p.T; step += 2) {
    run_step(step, z_even);
    if (step + 1 < p.T) run_step(step + 1, z_odd);
  }
  const float* h_last = h_buf + (p.T % 2) * rows_size;
  if (owner) {
    for (int b = 0; b < sl.rows; ++b) {
      p.state[(static_cast<int64_t>(sl.d) * B + sl.b0 + b) * H + j] = h_last[b * p.padded + j];
    }
  }
#endif
}

// Backwards in time: unit k's first thread forms dL/dz_t[k] from dL/dh_t[k] and writes it into the current
// buffer of every block of the cluster; after the barrier, every thread's part of dL/dh_{t-1}[k] =
// sum_j W_hh[j][k] dL/dz_t[j], its weights being column k.
template <int KPT, Activation A>
__global__ void __launch_bounds__(kThreads, 1) elman_backward_cluster_kernel(ClusterParams p) {
#if !RNNFAST_HAS_CLUSTERS
  __trap();
#else
  const StepExchange exchange{p.blocks_per_direction};
  const Slice sl = block_slice(p);
  const int H = p.H, B = p.B, ld = p.D * p.H, tpu = p.threads_per_unit;
  const int kk = threadIdx.x / tpu, q = threadIdx.x % tpu, k = sl.j0 + kk;
  const bool owner = kk < sl.units && q == 0;
  RNNFAST_DYNAMIC_SHARED(float, smem);
  float* dz_buf = smem;  // (2, rows, padded): dL/dz_t of the direction's every unit; step s writes buffer s % 2
  float w[KPT];          // W_hh[j][k] at j = state_index(i)
  const float* w_col = p.w_hh + static_cast<int64_t>(sl.d) * H * H + k;
#pragma unroll
  for (int i = 0; i < KPT; ++i) {
    const int jrow = state_index(i, q, tpu);
    w[i] = kk < sl.units && jrow < H ? w_col[static_cast<int64_t>(jrow) * H] : 0.f;
  }
  init_state_buffers(dz_buf, nullptr, sl, B, H, p.padded);
  float dh[kMaxRows] = {};  // dL/dh_t[k] carried from the step after (owner only): dL/dh_n in, dL/dh_0 out
  if (owner) {
#pragma unroll
    for (int b = 0; b < kMaxRows; ++b) {
      if (b < sl.rows) dh[b] = p.state[(static_cast<int64_t>(sl.d) * B + sl.b0 + b) * H + k];
    }
  }
  exchange.sync();
  auto step_t = [&](int step) { return sl.d == 0 ? step : p.T - 1 - step; };
  const int rows_size = sl.rows * p.padded;
  // g: unit k's dL/dh_t from above at `step`, then its dL/dz_t; h: its saved h_t (owner only). Loaded two steps
  // ahead, into one of two register sets, as in the forward kernel.
  auto run_step = [&](int step, float (&g)[kMaxRows], float (&h)[kMaxRows]) {
    float* dz_cur = dz_buf + (step % 2) * rows_size;
    if (owner) {
#pragma unroll
      for (int b = 0; b < kMaxRows; ++b) {  // to kMaxRows, so that the register arrays' indices are constants
        if (b >= sl.rows) break;
        g[b] = ActivationFn<A>::backward_from_output(g[b] + dh[b], h[b]);
        exchange.publish(dz_cur, b * p.padded + k, g[b]);
      }
    }
    exchange.arrive();
    if (owner) {
      store_rows(p.seq, g, step_t(step), sl, k, B, ld, H);
      if (step >= 2) {
        load_rows(g, p.seq, step_t(step - 2), sl, k, B, ld, H);
        load_rows(h, p.out, step_t(step - 2), sl, k, B, ld, H);
      }
    }
    exchange.wait();  // dL/dz_t of every unit is in every block's buffer
#pragma unroll
    for (int b = 0; b < kMaxRows; ++b) {
      if (b >= sl.rows) break;
      const float acc = unit_dot(w, dz_cur + b * p.padded, q, tpu);
      if (owner) dh[b] = acc;
    }
  };
  // Set a: the steps the loop runs first, third, ... (T - 1, T - 3, ...); set b: the others.
  float g_a[kMaxRows] = {}, h_a[kMaxRows] = {}, g_b[kMaxRows] = {}, h_b[kMaxRows] = {};
  if (owner) {
    load_rows(g_a, p.seq, step_t(p.T - 1), sl, k, B, ld, H);
    load_rows(h_a, p.out, step_t(p.T - 1), sl, k, B, ld, H);
    if (p.T > 1) {
      load_rows(g_b, p.seq, step_t(p.T - 2), sl, k, B, ld, H);
      load_rows(h_b, p.out, step_t(p.T - 2), sl, k, B, ld, H);
    }
  }
  for (int step = p.T - 1; step >= 0; step -= 2) {
    run_step(step, g_a, h_a);
    if (step >= 1) run_step(step - 1, g_b, h_b);
  }
  // No block reads or writes another's buffers after the last barrier, so each may leave when done.
  if (owner) {
#pragma unroll
    for (int b = 0; b < kMaxRows; ++b) {
      if (b < sl.rows) p.state[(static_cast<int64_t>(sl.d) * B + sl.b0 + b) * H + k] = dh[b];
    }
  }
#endif
}

// The kernel of a plan's kpt, for activation A.
template <Activation A>
auto forward_kernel(int kpt) {
  switch (kpt) {
    case 4: return elman_forward_cluster_kernel<4, A>;
    case 8: return elman_forward_cluster_kernel<8, A>;
    case 16: return elman_forward_cluster_kernel<16, A>;
    case 32: return elman_forward_cluster_kernel<32, A>;
    default: return elman_forward_cluster_kernel<64, A>;
  }
}

template <Activation A>
auto backward_kernel(int kpt) {
  switch (kpt) {
    case 4: return elman_backward_cluster_kernel<4, A>;
    case 8: return elman_backward_cluster_kernel<8, A>;
    case 16: return elman_backward_cluster_kernel<16, A>;
    case 32: return elman_backward_cluster_kernel<32, A>;
    default: return elman_backward_cluster_kernel<64, A>;
  }
}

inline ClusterParams cluster_params(const ElmanSizes& s, const ClusterPlan& plan) {
  ClusterParams p{};
  set_sizes_and_plan(p, s, plan);
  p.threads_per_unit = plan.threads_per_unit;
  p.padded = plan.padded;
  return p;
}

// The kernels' parameters from the buffers of ForwardRecurrence / BackwardRecurrence (elman_layer.h), float32.
inline ClusterParams forward_params(const ElmanSizes& s, const ClusterPlan& plan, at::Tensor& output,
                                    const at::Tensor& hx, const at::Tensor& weight_hh, at::Tensor& h_n) {
  ClusterParams p = cluster_params(s, plan);
  p.seq = output.data_ptr<float>();
  p.state0 = hx.const_data_ptr<float>();
  p.state = h_n.data_ptr<float>();
  p.w_hh = weight_hh.const_data_ptr<float>();
  return p;
}

inline ClusterParams backward_params(const ElmanSizes& s, const ClusterPlan& plan, at::Tensor& grad_z,
                                     at::Tensor& grad_h, const at::Tensor& output, const at::Tensor& weight_hh) {
  ClusterParams p = cluster_params(s, plan);
  p.seq = grad_z.data_ptr<float>();
  p.out = output.const_data_ptr<float>();
  p.state = grad_h.data_ptr<float>();
  p.w_hh = weight_hh.const_data_ptr<float>();
  return p;
}

}  // namespace elman_cluster
}  // namespace cuda
}  // namespace rnnfast
