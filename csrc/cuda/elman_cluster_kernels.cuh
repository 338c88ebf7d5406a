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

// Part q of sum_k w[k] * row[k] over this thread's kpt entries, then summed over the unit's tpu threads.
template <int KPT>
__device__ __forceinline__ float unit_dot(const float (&w)[KPT], const float* row, int q, int tpu) {
  float acc = 0.f;
#pragma unroll
  for (int m = 0; m < KPT / 4; ++m) {
    const float4 v = *reinterpret_cast<const float4*>(row + 4 * (q + tpu * m));
    acc += w[4 * m] * v.x;
    acc += w[4 * m + 1] * v.y;
    acc += w[4 * m + 2] * v.z;
    acc += w[4 * m + 3] * v.w;
  }
  for (int offset = tpu / 2; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  return acc;
}

// Loads this unit's entries of step t of a (T, B, D*H) sequence, one per batch row of the block.
__device__ __forceinline__ void load_rows(float (&dst)[kMaxRows], const float* seq, int t, const Slice& sl, int j,
                                          int B, int ld, int H) {
#pragma unroll
  for (int b = 0; b < kMaxRows; ++b) {
    if (b < sl.rows) dst[b] = seq[(static_cast<int64_t>(t) * B + sl.b0 + b) * ld + sl.d * H + j];
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
// pre-activation, applies the activation, stores h_t and writes it into the next state buffer of every block
// of the cluster; then the cluster's barrier.
template <int KPT, Activation A>
__global__ void __launch_bounds__(kThreads, 1) elman_forward_cluster_kernel(ClusterParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // thread-block clusters need sm_90; the host launches this only there
#else
  auto cluster = cooperative_groups::this_cluster();
  const Slice sl = block_slice(p);
  const int H = p.H, B = p.B, ld = p.D * p.H, tpu = p.threads_per_unit, C = p.blocks_per_direction;
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
  cluster.sync();  // no block writes into another's buffers before that block has set them up
  auto step_t = [&](int step) { return sl.d == 0 ? step : p.T - 1 - step; };
  float z_next[kMaxRows] = {};  // the next step's pre-activations of unit j (owner only)
  if (owner) load_rows(z_next, p.seq, step_t(0), sl, j, B, ld, H);
  const int rows_size = sl.rows * p.padded;
  for (int step = 0; step < p.T; ++step) {
    const int t = step_t(step);
    float z[kMaxRows];
#pragma unroll
    for (int b = 0; b < kMaxRows; ++b) z[b] = z_next[b];
    if (owner && step + 1 < p.T) load_rows(z_next, p.seq, step_t(step + 1), sl, j, B, ld, H);
    const float* h_cur = h_buf + (step % 2) * rows_size;
    float* h_next = h_buf + ((step + 1) % 2) * rows_size;
#pragma unroll
    for (int b = 0; b < kMaxRows; ++b) {
      if (b >= sl.rows) break;
      const float acc = unit_dot(w, h_cur + b * p.padded, q, tpu);
      if (owner) {
        const float h = ActivationFn<A>::forward(z[b] + acc);
        p.seq[(static_cast<int64_t>(t) * B + sl.b0 + b) * ld + sl.d * H + j] = h;
        for (int r = 0; r < C; ++r) cluster.map_shared_rank(h_next, r)[b * p.padded + j] = h;
      }
    }
    cluster.sync();  // h_t of every unit is in every block's next buffer, and the current one is free again
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
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();
#else
  auto cluster = cooperative_groups::this_cluster();
  const Slice sl = block_slice(p);
  const int H = p.H, B = p.B, ld = p.D * p.H, tpu = p.threads_per_unit, C = p.blocks_per_direction;
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
  cluster.sync();
  auto step_t = [&](int step) { return sl.d == 0 ? step : p.T - 1 - step; };
  float g_next[kMaxRows] = {}, h_next[kMaxRows] = {};  // the next step's incoming dL/dh_t and saved h_t of unit k
  if (owner) {
    load_rows(g_next, p.seq, step_t(p.T - 1), sl, k, B, ld, H);
    load_rows(h_next, p.out, step_t(p.T - 1), sl, k, B, ld, H);
  }
  const int rows_size = sl.rows * p.padded;
  for (int step = p.T - 1; step >= 0; --step) {
    const int t = step_t(step);
    float* dz_cur = dz_buf + (step % 2) * rows_size;
    if (owner) {
#pragma unroll
      for (int b = 0; b < kMaxRows; ++b) {  // to kMaxRows, so that the register arrays' indices are constants
        if (b >= sl.rows) break;
        const float dz = ActivationFn<A>::backward_from_output(g_next[b] + dh[b], h_next[b]);
        p.seq[(static_cast<int64_t>(t) * B + sl.b0 + b) * ld + sl.d * H + k] = dz;
        for (int r = 0; r < C; ++r) cluster.map_shared_rank(dz_cur, r)[b * p.padded + k] = dz;
      }
      if (step > 0) {
        load_rows(g_next, p.seq, step_t(step - 1), sl, k, B, ld, H);
        load_rows(h_next, p.out, step_t(step - 1), sl, k, B, ld, H);
      }
    }
    cluster.sync();  // dL/dz_t of every unit is in every block's buffer
#pragma unroll
    for (int b = 0; b < kMaxRows; ++b) {
      if (b >= sl.rows) break;
      const float acc = unit_dot(w, dz_cur + b * p.padded, q, tpu);
      if (owner) dh[b] = acc;
    }
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
