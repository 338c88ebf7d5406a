// The persistent gated kernels of gated_persistent.cu and everything about them that is not the CUDA runtime:
// their parameters, how a layer is spread over blocks, and the parameters filled from a layer's buffers. Kept
// apart so that tests/cuda_emulation compiles these same kernels for the CPU (persistent_device.cuh).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../gate_math.h"
#include "../gated_layer.h"
#include "persistent_device.cuh"

namespace rnnfast {
namespace cuda {
namespace gated_persistent {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

struct GatedForwardParams {
  const float* gates_x;  // (T, B, D*G*H): x_t W_ih^T plus the biases the cell sums up front
  const float* bias_h;   // (D, G*H): the recurrent bias the cell applies itself (GRU), or null
  const float* w_hh;     // (D, G*H, H)
  float* output;         // (T, B, D*H): h_t
  float* h;              // (D, B, H): hx on entry, h_n on return
  float* c;              // (D, B, H): cx on entry, c_n on return; null without a cell state
  float* workspace;      // (T, B, D*W*H), or one step's scratch (1, B, D*W*H) when ws_step is 0
  int64_t ws_step;       // workspace_step_stride
  int T, B, H, D;
  int units_per_block, blocks_per_direction, batch_per_block;
};

struct GatedBackwardParams {
  float* grad_h_seq;       // (T, B, D*H): dL/dh_t from the output on entry, the total dL/dh_t on return
  float* grad_gates_x;     // (T, B, D*G*H): written
  float* grad_gates_h;     // (T, B, D*G*H): written, or null where it equals grad_gates_x (CellSpec)
  float* grad_h;           // (D, B, H): dL/dh_n on entry, dL/dh_0 on return
  float* grad_c;           // (D, B, H): dL/dc_n on entry, dL/dc_0 on return; null without a cell state
  const float* prev_h;     // (T, B, D*H): the h each step started from
  const float* workspace;  // (T, B, D*W*H): the forward's
  const float* w_hh;       // (D, G*H, H)
  int T, B, H, D;
  int units_per_block, blocks_per_direction, batch_per_block;
};

__device__ __forceinline__ int step_time(int d, int step, int T) { return d == 0 ? step : T - 1 - step; }

// Per step: the block's G*units recurrent products for each of its rows (a warp-wide reduction each, as in the
// Elman split kernels), then the cell's pointwise step for its (row, unit) pairs, one thread each. The cell runs
// on its operands gathered into registers, gate k at [k]: its H is 1 there.
template <typename Cell, bool kGridSync>
__global__ void __launch_bounds__(kThreads) gated_forward_persistent_kernel(GatedForwardParams p) {
  constexpr int G = static_cast<int>(Cell::spec.gates), W = static_cast<int>(Cell::spec.workspace_units);
  const Slice sl = block_slice(p);
  const int H = p.H, B = p.B, GU = G * sl.units;
  const int64_t ld_gates = static_cast<int64_t>(p.D) * G * H, ld_out = static_cast<int64_t>(p.D) * H;
  const int64_t ld_ws = static_cast<int64_t>(p.D) * W * H;
  RNNFAST_DYNAMIC_SHARED(float, smem);
  float* w_s = smem;                  // (G*units, H): row k*units + jj is W_hh's row k*H + j0 + jj
  float* h_s = w_s + GU * H;          // (rows, H): h_{t-1}, whole rows, most units another block's in a split plan
  float* gh_s = h_s + sl.rows * H;    // (rows, G*units): h_{t-1} W_hh^T for the block's gates
  float* c_s = gh_s + sl.rows * GU;   // (rows, units): c of the block's units
  const float* w = p.w_hh + static_cast<int64_t>(sl.d) * G * H * H;
  for (int i = threadIdx.x; i < GU * H; i += kThreads) {
    const int r = i / H;
    w_s[i] = w[(static_cast<int64_t>(r / sl.units) * H + sl.j0 + r % sl.units) * H + i % H];
  }
  const int64_t state0 = (static_cast<int64_t>(sl.d) * B + sl.b0) * H;  // the block's first row in (D, B, H)
  for (int i = threadIdx.x; i < sl.rows * H; i += kThreads) h_s[i] = p.h[state0 + i];
  for (int o = threadIdx.x; o < sl.rows * sl.units; o += kThreads) {
    c_s[o] = p.c ? p.c[state0 + (o / sl.units) * H + sl.j0 + o % sl.units] : 0.f;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  int t = 0;
  for (int step = 0; step < p.T; ++step) {
    t = step_time(sl.d, step, p.T);
    // A split plan's h_{t-1} comes from the output, which every block of the direction wrote; a block that owns
    // all units of its rows wrote its h_{t-1} into h_s itself, with no global round trip on the step's path.
    if (kGridSync && step > 0) {
      const int64_t prev = static_cast<int64_t>(step_time(sl.d, step - 1, p.T)) * B + sl.b0;
      for (int i = threadIdx.x; i < sl.rows * H; i += kThreads) {
        h_s[i] = load_coherent(p.output + (prev + i / H) * ld_out + static_cast<int64_t>(sl.d) * H + i % H);
      }
      __syncthreads();
    }
    for (int o = warp; o < sl.rows * GU; o += kWarps) {
      const float* w_row = w_s + (o % GU) * H;
      const float* h_row = h_s + (o / GU) * H;
      float acc = 0.f;
      for (int k = lane; k < H; k += 32) acc += w_row[k] * h_row[k];
      acc = warp_sum(acc);
      if (lane == 0) gh_s[o] = acc;
    }
    __syncthreads();
    for (int o = threadIdx.x; o < sl.rows * sl.units; o += kThreads) {
      const int b = o / sl.units, jj = o % sl.units, j = sl.j0 + jj;
      const int64_t row = static_cast<int64_t>(t) * B + sl.b0 + b;
      const int64_t unit = static_cast<int64_t>(sl.d) * G * H + j;  // gate 0 of unit j in a (D*G*H) row
      float gx[G], gh[G], bias[G], saved[W];
#pragma unroll
      for (int k = 0; k < G; ++k) {
        gx[k] = p.gates_x[row * ld_gates + unit + static_cast<int64_t>(k) * H];
        gh[k] = gh_s[b * GU + k * sl.units + jj];
        bias[k] = p.bias_h ? p.bias_h[unit + static_cast<int64_t>(k) * H] : 0.f;
      }
      float c = c_s[o];
      const float value = Cell::forward(gx, gh, bias, h_s[b * H + j], &c, saved, 0, 1);
      c_s[o] = c;
      // In place: no other thread reads this (row, unit) before the step's barrier, after which it is h_{t-1}.
      if constexpr (!kGridSync) h_s[b * H + j] = value;
      float* ws = p.workspace + t * p.ws_step + (static_cast<int64_t>(sl.b0) + b) * ld_ws +
                  static_cast<int64_t>(sl.d) * W * H + j;
#pragma unroll
      for (int k = 0; k < W; ++k) ws[static_cast<int64_t>(k) * H] = saved[k];
      p.output[row * ld_out + static_cast<int64_t>(sl.d) * H + j] = value;
    }
    step_barrier<kGridSync>();
  }
  for (int o = threadIdx.x; o < sl.rows * sl.units; o += kThreads) {
    const int b = o / sl.units, j = sl.j0 + o % sl.units;
    // h_n is the last step's output, which this thread wrote.
    p.h[state0 + b * H + j] = p.output[(static_cast<int64_t>(t) * B + sl.b0 + b) * ld_out + sl.d * H + j];
    if (p.c) p.c[state0 + b * H + j] = c_s[o];
  }
}

// Per step, backwards in time: the cell's pointwise backward for the block's (row, unit) pairs, which writes
// dL/dgates_t; then, once every block's are in, dL/dh_{t-1} of the block's units as the product of the whole
// dL/d(h_{t-1} W_hh^T) rows with the block's columns of W_hh (a warp-wide reduction each), onto the direct part
// the cell wrote (GRU: z * dL/dh_t; zero for the LSTM).
template <typename Cell, bool kGridSync>
__global__ void __launch_bounds__(kThreads) gated_backward_persistent_kernel(GatedBackwardParams p) {
  constexpr int G = static_cast<int>(Cell::spec.gates), W = static_cast<int>(Cell::spec.workspace_units);
  const Slice sl = block_slice(p);
  const int H = p.H, B = p.B, GH = G * H;
  const int64_t ld_gates = static_cast<int64_t>(p.D) * GH, ld_out = static_cast<int64_t>(p.D) * H;
  const int64_t ld_ws = static_cast<int64_t>(p.D) * W * H;
  RNNFAST_DYNAMIC_SHARED(float, smem);
  float* wt_s = smem;                        // (units, G*H): wt_s[kk * G*H + r] = W_hh[r][j0 + kk]
  float* dg_s = wt_s + sl.units * GH;        // (rows, G*H): the step's dL/d(h_{t-1} W_hh^T), from every block
  float* dh_s = dg_s + sl.rows * GH;         // (rows, units): dL/dh carried into the step, the block's units
  float* dc_s = dh_s + sl.rows * sl.units;   // (rows, units): dL/dc carried into the step
  const float* w = p.w_hh + static_cast<int64_t>(sl.d) * GH * H;
  for (int i = threadIdx.x; i < sl.units * GH; i += kThreads) {
    wt_s[i] = w[static_cast<int64_t>(i % GH) * H + sl.j0 + i / GH];
  }
  const int64_t state0 = (static_cast<int64_t>(sl.d) * B + sl.b0) * H;
  for (int o = threadIdx.x; o < sl.rows * sl.units; o += kThreads) {
    const int64_t own = state0 + (o / sl.units) * H + sl.j0 + o % sl.units;
    dh_s[o] = p.grad_h[own];
    dc_s[o] = p.grad_c ? p.grad_c[own] : 0.f;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  for (int step = p.T - 1; step >= 0; --step) {
    const int t = step_time(sl.d, step, p.T);
    for (int o = threadIdx.x; o < sl.rows * sl.units; o += kThreads) {
      const int b = o / sl.units, j = sl.j0 + o % sl.units;
      const int64_t row = static_cast<int64_t>(t) * B + sl.b0 + b;
      float* grad_h_t = p.grad_h_seq + row * ld_out + static_cast<int64_t>(sl.d) * H + j;
      const float total = *grad_h_t + dh_s[o];
      *grad_h_t = total;
      float saved[W], dgx[G], dgh[G] = {};  // dgh stays unwritten by a cell whose gradients coincide
      const float* ws = p.workspace + row * ld_ws + static_cast<int64_t>(sl.d) * W * H + j;
#pragma unroll
      for (int k = 0; k < W; ++k) saved[k] = ws[static_cast<int64_t>(k) * H];
      float h_prev = 0.f;
      if constexpr (Cell::spec.direct_hidden_path) h_prev = p.prev_h[row * ld_out + static_cast<int64_t>(sl.d) * H + j];
      float dc = dc_s[o], direct = 0.f;
      Cell::backward(total, &dc, saved, h_prev, dgx, dgh, &direct, 0, 1);
      dc_s[o] = dc;
      dh_s[o] = direct;
      const int64_t unit = row * ld_gates + static_cast<int64_t>(sl.d) * GH + j;
#pragma unroll
      for (int k = 0; k < G; ++k) p.grad_gates_x[unit + static_cast<int64_t>(k) * H] = dgx[k];
      if (p.grad_gates_h) {
#pragma unroll
        for (int k = 0; k < G; ++k) p.grad_gates_h[unit + static_cast<int64_t>(k) * H] = dgh[k];
      }
      // A block that owns all units of its rows has the whole rows of dL/d(h_{t-1} W_hh^T) here: straight into
      // dg_s (the last step's readers of dg_s are past the barrier that ended it).
      if constexpr (!kGridSync) {
#pragma unroll
        for (int k = 0; k < G; ++k) dg_s[b * GH + k * H + j] = p.grad_gates_h ? dgh[k] : dgx[k];
      }
    }
    step_barrier<kGridSync>();  // every block's dL/dgates_t is visible before any block reads the whole rows
    if constexpr (kGridSync) {
      const float* recurrent = p.grad_gates_h ? p.grad_gates_h : p.grad_gates_x;
      const int64_t first = (static_cast<int64_t>(t) * B + sl.b0) * ld_gates + static_cast<int64_t>(sl.d) * GH;
      for (int i = threadIdx.x; i < sl.rows * GH; i += kThreads) {
        dg_s[i] = load_coherent(recurrent + first + (i / GH) * ld_gates + i % GH);
      }
      __syncthreads();
    }
    for (int o = warp; o < sl.rows * sl.units; o += kWarps) {
      const float* dg = dg_s + (o / sl.units) * GH;
      const float* wt = wt_s + (o % sl.units) * GH;
      float acc = 0.f;
      for (int r = lane; r < GH; r += 32) acc += dg[r] * wt[r];
      acc = warp_sum(acc);
      if (lane == 0) dh_s[o] += acc;
    }
    __syncthreads();  // dh_s is whole, and dg_s read by all, before the next step
  }
  for (int o = threadIdx.x; o < sl.rows * sl.units; o += kThreads) {
    const int64_t own = state0 + (o / sl.units) * H + sl.j0 + o % sl.units;
    p.grad_h[own] = dh_s[o];
    if (p.grad_c) p.grad_c[own] = dc_s[o];
  }
}

// How a layer is spread over blocks. Where all gates' W_hh fits one block's shared memory, each block owns a whole
// direction for a couple of batch rows and never waits for another. Else a direction's units are split over
// blocks (8 units each, up to 64 blocks over the directions, as the Elman split plan) that meet at a grid-wide
// barrier every step, each taking as many batch rows as its shared memory holds.
struct GatedPlan {
  int units_per_block, blocks_per_direction, batch_per_block, batch_blocks;
  bool grid_sync;
  size_t forward_smem, backward_smem;
};

constexpr size_t kSmemBudget = 160 * 1024;

// The float32 shared memory of the kernels above for a block of `units` units and `rows` batch rows.
inline size_t forward_smem_bytes(int G, int H, int units, int rows) {
  const size_t gates = static_cast<size_t>(G) * units;
  return sizeof(float) * (gates * H + static_cast<size_t>(rows) * H + rows * gates + static_cast<size_t>(rows) * units);
}
inline size_t backward_smem_bytes(int G, int H, int units, int rows) {
  const size_t gh = static_cast<size_t>(G) * H;
  return sizeof(float) * (units * gh + rows * gh + 2 * static_cast<size_t>(rows) * units);
}

inline GatedPlan plan_launch(const GatedSizes& s, size_t smem_budget = kSmemBudget) {
  const int H = static_cast<int>(s.H), B = static_cast<int>(s.B), G = static_cast<int>(s.G);
  auto smem = [&](int units, int rows) {
    return std::max(forward_smem_bytes(G, H, units, rows), backward_smem_bytes(G, H, units, rows));
  };
  GatedPlan plan{};
  const int rows = std::min(B, 2);
  if (smem(H, rows) <= smem_budget) {
    plan.units_per_block = H;
    plan.batch_per_block = rows;
    plan.grid_sync = false;
  } else {
    const int blocks = std::clamp((H + 7) / 8, 1, std::max(1, 64 / static_cast<int>(s.D)));
    plan.units_per_block = (H + blocks - 1) / blocks;
    plan.batch_per_block = B;
    while (plan.batch_per_block > 1 && smem(plan.units_per_block, plan.batch_per_block) > smem_budget) {
      plan.batch_per_block = (plan.batch_per_block + 1) / 2;
    }
    plan.grid_sync = true;
  }
  plan.blocks_per_direction = (H + plan.units_per_block - 1) / plan.units_per_block;
  plan.batch_blocks = (B + plan.batch_per_block - 1) / plan.batch_per_block;
  plan.forward_smem = forward_smem_bytes(G, H, plan.units_per_block, plan.batch_per_block);
  plan.backward_smem = backward_smem_bytes(G, H, plan.units_per_block, plan.batch_per_block);
  return plan;
}

template <typename Cell>
auto forward_kernel(const GatedPlan& plan) {
  return plan.grid_sync ? gated_forward_persistent_kernel<Cell, true> : gated_forward_persistent_kernel<Cell, false>;
}

template <typename Cell>
auto backward_kernel(const GatedPlan& plan) {
  return plan.grid_sync ? gated_backward_persistent_kernel<Cell, true>
                        : gated_backward_persistent_kernel<Cell, false>;
}

inline float* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// The forward kernel's parameters for float32 buffers, given the input projection gates_x (T, B, D*G*H).
inline GatedForwardParams forward_params(GatedForwardBuffers& buf, const GatedSizes& s, const GatedPlan& plan,
                                         const at::Tensor& gates_x) {
  GatedForwardParams p{};
  p.gates_x = gates_x.const_data_ptr<float>();
  p.bias_h = buf.bias_h.defined() ? buf.bias_h.const_data_ptr<float>() : nullptr;
  p.w_hh = buf.weight_hh.const_data_ptr<float>();
  p.output = buf.output.data_ptr<float>();
  p.h = buf.h.data_ptr<float>();
  p.c = data_or_null(buf.c);
  p.workspace = buf.workspace.data_ptr<float>();
  p.ws_step = workspace_step_stride(buf, s);
  set_sizes_and_plan(p, s, plan);
  return p;
}

inline GatedBackwardParams backward_params(GatedBackwardBuffers& buf, const GatedSizes& s, const GatedPlan& plan) {
  GatedBackwardParams p{};
  p.grad_h_seq = buf.grad_h_seq.data_ptr<float>();
  p.grad_gates_x = buf.grad_gates_x.data_ptr<float>();
  p.grad_gates_h = data_or_null(buf.grad_gates_h);
  p.grad_h = buf.grad_h.data_ptr<float>();
  p.grad_c = data_or_null(buf.grad_c);
  p.prev_h = buf.prev_h.const_data_ptr<float>();
  p.workspace = buf.workspace.const_data_ptr<float>();
  p.w_hh = buf.weight_hh.const_data_ptr<float>();
  set_sizes_and_plan(p, s, plan);
  return p;
}

}  // namespace gated_persistent
}  // namespace cuda
}  // namespace rnnfast
