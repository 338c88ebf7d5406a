// The Elman persistent kernels of elman_persistent.cu (the one-block and split plans) and everything about them
// that is not the CUDA runtime: parameters, plan, kernels. Kept apart so that tests/cuda_emulation compiles these
// same kernels for the CPU (persistent_device.cuh); there only their float32 instances.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../cell_math.h"
#include "../elman_args.h"
#include "persistent_device.cuh"

namespace rnnfast {
namespace cuda {
namespace elman_persistent {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;

template <typename scalar_t>
struct PersistentParams {
  scalar_t* seq;           // forward: output (T, B, D*H), pre-activations in, h_t out; backward: grad_z, same layout
  const scalar_t* out;     // backward only: the forward's output (T, B, D*H)
  const scalar_t* state0;  // forward: hx (D, B, H); backward: unused
  scalar_t* state;         // forward: h_n (D, B, H); backward: grad_h (D, B, H), dL/dh_n in, dL/dh_0 out
  const scalar_t* w_hh;    // (D, H, H)
  int T, B, H, D;
  int units_per_block;     // hidden units owned by one block
  int blocks_per_direction;
  int batch_per_block;     // batch rows of one block (gridDim.y slices the batch)
};

// Each thread owns up to this many of its block's (batch row, hidden unit) values: it carries their next-step
// operands in registers, so those loads are in flight while the current step computes.
constexpr int kPerThread = 4;
constexpr int kMaxOutputsPerBlock = kThreads * kPerThread;

// Output m of this thread: index o = threadIdx.x + m * kThreads into the block's (rows, units) outputs.
__device__ __forceinline__ int own_output(int m) { return threadIdx.x + m * kThreads; }

// Where this block's output o of step t lives in a (T, B, D*H) sequence.
__device__ __forceinline__ int64_t own_offset(const Slice& s, int o, int t, int B, int ld, int H) {
  return (static_cast<int64_t>(t) * B + s.b0 + o / s.units) * ld + s.d * H + s.j0 + o % s.units;
}

// Loads this thread's outputs of step t of a (T, B, D*H) sequence into registers.
template <typename scalar_t>
__device__ __forceinline__ void load_own(const scalar_t* seq, int t, const Slice& s, int B, int ld, int H,
                                         float (&regs)[kPerThread]) {
#pragma unroll
  for (int m = 0; m < kPerThread; ++m) {
    const int o = own_output(m);
    if (o < s.rows * s.units) regs[m] = static_cast<float>(seq[own_offset(s, o, t, B, ld, H)]);
  }
}

// Loads rows of step t of a sequence, written by other blocks, into shared memory (rows x H).
template <typename scalar_t>
__device__ __forceinline__ void load_rows_coherent(float* dst, const scalar_t* seq, int t, const Slice& s, int B,
                                                   int ld, int H) {
  for (int i = threadIdx.x; i < s.rows * H; i += kThreads) {
    dst[i] = load_coherent(seq + (static_cast<int64_t>(t) * B + s.b0 + i / H) * ld + s.d * H + i % H);
  }
}

// ---- The one-block plan: W_hh whole in one block's shared memory, stored k-major (H x units) so that threads
// owning neighbouring units read neighbouring words. Each thread computes its own outputs; blocks never wait
// for each other. Shared memory, float32: W_hh, then two state buffers (forward, rows x H each) or the step's
// dL/dz rows (backward). Verified on an H200 by the GPU check of 8bcacf8.
inline size_t one_block_shared_bytes(int H, int rows, bool backward) {
  const size_t w = static_cast<size_t>(H) * H, state = static_cast<size_t>(rows) * H;
  return sizeof(float) * (backward ? w + state : w + 2 * state);
}

template <typename scalar_t, Activation A>
__global__ void __launch_bounds__(kThreads) elman_forward_one_block_kernel(PersistentParams<scalar_t> p) {
  const Slice sl = block_slice(p);
  const int H = p.H, B = p.B, ld = p.D * p.H, outputs = sl.rows * sl.units;
  RNNFAST_DYNAMIC_SHARED(float, smem);
  float* w_s = smem;                       // (H, units): w_s[k * units + jj] = W_hh[j0 + jj][k]
  float* h_cur = w_s + sl.units * H;       // (rows, H): the state this step starts from
  float* h_next = h_cur + sl.rows * H;     // (rows, H): the state it ends in
  const scalar_t* w = p.w_hh + static_cast<int64_t>(sl.d) * H * H;
  for (int i = threadIdx.x; i < sl.units * H; i += kThreads) {
    w_s[(i % H) * sl.units + i / H] = static_cast<float>(w[sl.j0 * H + i]);
  }
  for (int i = threadIdx.x; i < sl.rows * H; i += kThreads) {
    h_cur[i] = static_cast<float>(p.state0[(static_cast<int64_t>(sl.d) * B + sl.b0 + i / H) * H + i % H]);
  }
  auto step_t = [&](int step) { return sl.d == 0 ? step : p.T - 1 - step; };
  float z_next[kPerThread];  // x_t W_ih^T + b of this thread's outputs, one step ahead
  load_own(p.seq, step_t(0), sl, B, ld, H, z_next);

  int prev_t = -1;
  for (int step = 0; step < p.T; ++step) {
    const int t = step_t(step);
    float z[kPerThread];
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) z[m] = z_next[m];
    if (step + 1 < p.T) load_own(p.seq, step_t(step + 1), sl, B, ld, H, z_next);
    __syncthreads();
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int o = own_output(m);
      if (o >= outputs) break;
      const int bb = o / sl.units, jj = o % sl.units;
      const float* h = h_cur + bb * H;
      float acc = z[m];
      for (int k = 0; k < H; ++k) acc += w_s[k * sl.units + jj] * h[k];
      const scalar_t h_t = static_cast<scalar_t>(ActivationFn<A>::forward(acc));
      p.seq[own_offset(sl, o, t, B, ld, H)] = h_t;
      h_next[bb * H + jj] = static_cast<float>(h_t);
    }
    prev_t = t;
    __syncthreads();  // this step's h_t is complete before the next step reads it
    float* swap = h_cur;
    h_cur = h_next;
    h_next = swap;
  }
#pragma unroll
  for (int m = 0; m < kPerThread; ++m) {
    const int o = own_output(m);
    if (o < outputs) {
      p.state[(static_cast<int64_t>(sl.d) * B + sl.b0 + o / sl.units) * H + sl.j0 + o % sl.units] =
          p.seq[own_offset(sl, o, prev_t, B, ld, H)];
    }
  }
}

template <typename scalar_t, Activation A>
__global__ void __launch_bounds__(kThreads) elman_backward_one_block_kernel(PersistentParams<scalar_t> p) {
  const Slice sl = block_slice(p);
  const int H = p.H, B = p.B, ld = p.D * p.H, outputs = sl.rows * sl.units;
  RNNFAST_DYNAMIC_SHARED(float, smem);
  float* wt_s = smem;                  // (H, units): wt_s[j * units + kk] = W_hh[j][j0 + kk]
  float* dz_s = wt_s + sl.units * H;   // (rows, H): the step's dL/dz
  const scalar_t* w = p.w_hh + static_cast<int64_t>(sl.d) * H * H;
  for (int i = threadIdx.x; i < sl.units * H; i += kThreads) {
    const int j = i / sl.units, kk = i % sl.units;
    wt_s[i] = static_cast<float>(w[j * H + sl.j0 + kk]);
  }
  auto step_t = [&](int step) { return sl.d == 0 ? step : p.T - 1 - step; };
  float dh[kPerThread];  // dL/dh of this thread's outputs: dL/dh_n in, dL/dh_0 out
  float g_next[kPerThread], h_next[kPerThread];  // the next step's incoming dL/dh_t and saved h_t
#pragma unroll
  for (int m = 0; m < kPerThread; ++m) {
    const int o = own_output(m);
    dh[m] = o < outputs ? static_cast<float>(p.state[(static_cast<int64_t>(sl.d) * B + sl.b0 + o / sl.units) * H +
                                                     sl.j0 + o % sl.units])
                        : 0.f;
  }
  load_own(p.seq, step_t(p.T - 1), sl, B, ld, H, g_next);
  load_own(p.out, step_t(p.T - 1), sl, B, ld, H, h_next);

  for (int step = p.T - 1; step >= 0; --step) {
    const int t = step_t(step);
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int o = own_output(m);
      if (o < outputs) {
        const scalar_t dz =
            static_cast<scalar_t>(ActivationFn<A>::backward_from_output(g_next[m] + dh[m], h_next[m]));
        p.seq[own_offset(sl, o, t, B, ld, H)] = dz;
        dz_s[(o / sl.units) * H + o % sl.units] = static_cast<float>(dz);
      }
    }
    if (step > 0) {
      load_own(p.seq, step_t(step - 1), sl, B, ld, H, g_next);
      load_own(p.out, step_t(step - 1), sl, B, ld, H, h_next);
    }
    __syncthreads();  // the whole dL/dz_t row is in shared memory
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int o = own_output(m);
      if (o >= outputs) break;
      const float* dz = dz_s + (o / sl.units) * H;
      const int kk = o % sl.units;
      float acc = 0.f;
      for (int j = 0; j < H; ++j) acc += dz[j] * wt_s[j * sl.units + kk];
      dh[m] = acc;
    }
    __syncthreads();  // dz_s is read by all before the next step overwrites it
  }
#pragma unroll
  for (int m = 0; m < kPerThread; ++m) {
    const int o = own_output(m);
    if (o < outputs) {
      p.state[(static_cast<int64_t>(sl.d) * B + sl.b0 + o / sl.units) * H + sl.j0 + o % sl.units] =
          static_cast<scalar_t>(dh[m]);
    }
  }
}

// ---- The split plan: a direction's units spread over blocks that meet at a grid-wide barrier every step. Each
// output is a warp-wide reduction (32 partial sums: long rows stay accurate in float32). Shared memory, float32:
// forward, the block's W_hh rows (units x H), the state rows (rows x H), this step's pre-activations
// (rows x units); backward, its W_hh columns transposed (units x H), the step's dL/dz rows (rows x H), its units'
// dL/dh (rows x units). Verified on an H200 by the GPU check of 9a28873.
constexpr int kWarps = kThreads / 32;

inline size_t split_shared_bytes(int H, int units, int rows, bool backward) {
  const size_t w = static_cast<size_t>(units) * H, state = static_cast<size_t>(rows) * H;
  const size_t own = static_cast<size_t>(rows) * units;
  return sizeof(float) * (w + state + own);
}

template <typename scalar_t, Activation A>
__global__ void __launch_bounds__(kThreads) elman_forward_split_kernel(PersistentParams<scalar_t> p) {
  const Slice sl = block_slice(p);
  const int H = p.H, B = p.B, ld = p.D * p.H;
  RNNFAST_DYNAMIC_SHARED(float, smem);
  float* w_s = smem;                               // (units, H): rows j0.. of W_hh
  float* h_cur = w_s + sl.units * H;               // (rows, H): the state this step starts from
  float* z_s = h_cur + sl.rows * H;                // (rows, units): this step's x_t W_ih^T + b
  const scalar_t* w = p.w_hh + static_cast<int64_t>(sl.d) * H * H;
  for (int i = threadIdx.x; i < sl.units * H; i += kThreads) w_s[i] = static_cast<float>(w[sl.j0 * H + i]);
  for (int i = threadIdx.x; i < sl.rows * H; i += kThreads) {
    h_cur[i] = static_cast<float>(p.state0[(static_cast<int64_t>(sl.d) * B + sl.b0 + i / H) * H + i % H]);
  }
  auto step_t = [&](int step) { return sl.d == 0 ? step : p.T - 1 - step; };
  float z_reg[kPerThread];
  load_own(p.seq, step_t(0), sl, B, ld, H, z_reg);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int prev_t = -1;
  for (int step = 0; step < p.T; ++step) {
    const int t = step_t(step);
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int i = threadIdx.x + m * kThreads;
      if (i < sl.rows * sl.units) z_s[i] = z_reg[m];
    }
    if (step + 1 < p.T) load_own(p.seq, step_t(step + 1), sl, B, ld, H, z_reg);
    if (prev_t >= 0) load_rows_coherent(h_cur, p.seq, prev_t, sl, B, ld, H);
    __syncthreads();
    for (int o = warp; o < sl.rows * sl.units; o += kWarps) {
      const int bb = o / sl.units, jj = o % sl.units;
      float acc = 0.f;
      for (int k = lane; k < H; k += 32) acc += w_s[jj * H + k] * h_cur[bb * H + k];
      acc = warp_sum(acc);
      if (lane == 0) {
        const scalar_t h = static_cast<scalar_t>(ActivationFn<A>::forward(z_s[o] + acc));
        p.seq[(static_cast<int64_t>(t) * B + sl.b0 + bb) * ld + sl.d * H + sl.j0 + jj] = h;
      }
    }
    prev_t = t;
    cg::this_grid().sync();  // this step's h_t, from every block, is visible before the next step reads it
  }
  for (int o = threadIdx.x; o < sl.rows * sl.units; o += kThreads) {
    const int b = sl.b0 + o / sl.units, j = sl.j0 + o % sl.units;
    p.state[(static_cast<int64_t>(sl.d) * B + b) * H + j] =
        p.seq[(static_cast<int64_t>(prev_t) * B + b) * ld + sl.d * H + j];
  }
}

template <typename scalar_t, Activation A>
__global__ void __launch_bounds__(kThreads) elman_backward_split_kernel(PersistentParams<scalar_t> p) {
  const Slice sl = block_slice(p);  // here j0.. are the units k whose dL/dh_{t-1} this block computes
  const int H = p.H, B = p.B, ld = p.D * p.H;
  RNNFAST_DYNAMIC_SHARED(float, smem);
  float* wt_s = smem;                       // (units, H): columns j0.. of W_hh, transposed
  float* dz_s = wt_s + sl.units * H;        // (rows, H): the step's dL/dz from every block
  float* dh_s = dz_s + sl.rows * H;         // (rows, units): dL/dh of this block's units
  const scalar_t* w = p.w_hh + static_cast<int64_t>(sl.d) * H * H;
  for (int i = threadIdx.x; i < sl.units * H; i += kThreads) {
    wt_s[i] = static_cast<float>(w[(i % H) * H + sl.j0 + i / H]);
  }
  scalar_t* grad_h = p.state + (static_cast<int64_t>(sl.d) * B + sl.b0) * H;
  for (int i = threadIdx.x; i < sl.rows * sl.units; i += kThreads) {
    dh_s[i] = static_cast<float>(grad_h[(i / sl.units) * H + sl.j0 + i % sl.units]);
  }
  auto step_t = [&](int step) { return sl.d == 0 ? step : p.T - 1 - step; };
  float g_reg[kPerThread], h_reg[kPerThread];
  load_own(p.seq, step_t(p.T - 1), sl, B, ld, H, g_reg);
  load_own(p.out, step_t(p.T - 1), sl, B, ld, H, h_reg);
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int step = p.T - 1; step >= 0; --step) {
    const int t = step_t(step);
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int i = threadIdx.x + m * kThreads;
      if (i < sl.rows * sl.units) {
        const int b = i / sl.units, k = sl.j0 + i % sl.units;
        const scalar_t dz =
            static_cast<scalar_t>(ActivationFn<A>::backward_from_output(g_reg[m] + dh_s[i], h_reg[m]));
        p.seq[(static_cast<int64_t>(t) * B + sl.b0 + b) * ld + sl.d * H + k] = dz;
      }
    }
    if (step > 0) {
      load_own(p.seq, step_t(step - 1), sl, B, ld, H, g_reg);
      load_own(p.out, step_t(step - 1), sl, B, ld, H, h_reg);
    }
    cg::this_grid().sync();  // every block's dL/dz_t is visible before any block reads the whole row
    load_rows_coherent(dz_s, p.seq, t, sl, B, ld, H);
    __syncthreads();
    for (int o = warp; o < sl.rows * sl.units; o += kWarps) {
      const int b = o / sl.units, kk = o % sl.units;
      float acc = 0.f;
      for (int j = lane; j < H; j += 32) acc += dz_s[b * H + j] * wt_s[kk * H + j];
      acc = warp_sum(acc);
      if (lane == 0) dh_s[o] = acc;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < sl.rows * sl.units; i += kThreads) {
    grad_h[(i / sl.units) * H + sl.j0 + i % sl.units] = static_cast<scalar_t>(dh_s[i]);
  }
}

// How a layer is spread over blocks. When all of W_hh fits one block's shared memory, each block owns a whole
// direction for a couple of batch rows and needs no grid-wide barrier: blocks never wait for each other. Else
// a direction's units are split over blocks (a few units each, for as many batch rows as a block's registers
// carry) that meet at a grid-wide barrier every step.
struct Launch {
  int units_per_block, blocks_per_direction, batch_per_block, batch_blocks;
  bool grid_sync;
  size_t forward_smem, backward_smem;
};

constexpr size_t kSingleBlockSmemBudget = 160 * 1024;

inline Launch plan_launch(const ElmanSizes& s, size_t smem_budget = kSingleBlockSmemBudget) {
  const int H = static_cast<int>(s.H), B = static_cast<int>(s.B);
  Launch plan{};
  const int rows = std::min(B, 2);
  if (one_block_shared_bytes(H, rows, false) <= smem_budget && rows * H <= kMaxOutputsPerBlock) {
    plan.units_per_block = H;
    plan.blocks_per_direction = 1;
    plan.batch_per_block = rows;
    plan.grid_sync = false;
  } else {
    const int per_direction_cap = std::max(1, 64 / static_cast<int>(s.D));
    const int blocks = std::clamp((H + 7) / 8, 1, per_direction_cap);
    plan.units_per_block = (H + blocks - 1) / blocks;
    plan.blocks_per_direction = (H + plan.units_per_block - 1) / plan.units_per_block;
    plan.batch_per_block = std::max(1, std::min(B, kMaxOutputsPerBlock / plan.units_per_block));
    plan.grid_sync = true;
  }
  plan.batch_blocks = (B + plan.batch_per_block - 1) / plan.batch_per_block;
  if (plan.grid_sync) {
    plan.forward_smem = split_shared_bytes(H, plan.units_per_block, plan.batch_per_block, false);
    plan.backward_smem = split_shared_bytes(H, plan.units_per_block, plan.batch_per_block, true);
  } else {
    plan.forward_smem = one_block_shared_bytes(H, plan.batch_per_block, false);
    plan.backward_smem = one_block_shared_bytes(H, plan.batch_per_block, true);
  }
  return plan;
}

inline int64_t total_blocks(const ElmanSizes& s, const Launch& plan) {
  return s.D * plan.blocks_per_direction * static_cast<int64_t>(plan.batch_blocks);
}

template <typename scalar_t>
PersistentParams<scalar_t> make_params(const ElmanSizes& s, const Launch& plan) {
  PersistentParams<scalar_t> p{};
  set_sizes_and_plan(p, s, plan);
  return p;
}

// The kernels' parameters from the buffers of ForwardRecurrence / BackwardRecurrence (elman_layer.h).
template <typename scalar_t>
PersistentParams<scalar_t> forward_params(const ElmanSizes& s, const Launch& plan, at::Tensor& output,
                                          const at::Tensor& hx, const at::Tensor& weight_hh, at::Tensor& h_n) {
  auto p = make_params<scalar_t>(s, plan);
  p.seq = output.data_ptr<scalar_t>();
  p.state0 = hx.const_data_ptr<scalar_t>();
  p.state = h_n.data_ptr<scalar_t>();
  p.w_hh = weight_hh.const_data_ptr<scalar_t>();
  return p;
}

template <typename scalar_t>
PersistentParams<scalar_t> backward_params(const ElmanSizes& s, const Launch& plan, at::Tensor& grad_z,
                                           at::Tensor& grad_h, const at::Tensor& output,
                                           const at::Tensor& weight_hh) {
  auto p = make_params<scalar_t>(s, plan);
  p.seq = grad_z.data_ptr<scalar_t>();
  p.out = output.const_data_ptr<scalar_t>();
  p.state = grad_h.data_ptr<scalar_t>();
  p.w_hh = weight_hh.const_data_ptr<scalar_t>();
  return p;
}

template <typename scalar_t>
using PersistentKernel = void (*)(PersistentParams<scalar_t>);

// The plan's kernel: the one-block kernels, or the split kernels with their grid-wide barrier.
template <typename scalar_t, Activation A>
PersistentKernel<scalar_t> plan_kernel(const Launch& plan, bool backward) {
  if (backward) {
    return plan.grid_sync ? elman_backward_split_kernel<scalar_t, A> : elman_backward_one_block_kernel<scalar_t, A>;
  }
  return plan.grid_sync ? elman_forward_split_kernel<scalar_t, A> : elman_forward_one_block_kernel<scalar_t, A>;
}

}  // namespace elman_persistent
}  // namespace cuda
}  // namespace rnnfast
