// The Elman fused-step path (elman_fused_step.cu): one launch per time step, in which each block computes a tile
// of the step's recurrent product (step_product.cuh) and finishes it in place: forward, bias-added input
// projection + product, activation, store, h_n; backward, dL/dz from dL/dh as the product's operand is staged,
// then dL/dh_{t-1}. Both directions of a layer run in the same launch. Against the general path (a cuBLAS call and
// an elementwise kernel per step) it halves the launches and their host time, where small steps are bound by them.
// Everything but the CUDA runtime is here, the host loops included, so that tests/cuda_emulation runs the same
// code on the CPU (there through emulation::launch): the kernels are plain CUDA C++; the host side uses ATen.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "../cell_math.h"
#include "../elman_args.h"
#include "../layer_states.h"
#include "step_product.cuh"

namespace rnnfast {
namespace cuda {
namespace elman_fused_step {

using step_product::blocks_per_sm;
using step_product::kThreads;
using step_product::kTileCols;
using step_product::kTileRows;

// One direction's rows at one step, from PackedSequence's batch sizes: rows [0, rows) run; of them,
// [0, continuing) ran the step before (their h_{t-1} is that step's output), the rest start from hx; rows
// [rows_next, rows) end here and give h_n.
struct StepRows {
  int64_t t, prev_t;  // this step's time index and the previous step's (prev_t unused when continuing == 0)
  int rows, continuing, rows_next;
};

template <typename scalar_t>
struct ForwardParams {
  scalar_t* output;          // (T, B, D*H): x_t W_ih^T + b on entry, h_t once step t has run
  const scalar_t* hx;        // (D, B, H)
  const scalar_t* weight_t;  // (D, H, H): each direction's W_hh transposed, [d][k][j] = W_hh[d][j][k]
  scalar_t* h_n;             // (D, B, H)
  int B, H, D, col_tiles;    // col_tiles: blocks along a direction's H columns
  StepRows step[2];          // by direction
};

template <typename scalar_t, typename acc_t>
struct BackwardParams {
  scalar_t* grad_z;          // (T, B, D*H): dL/dz_t once step t has run
  const scalar_t* grad_out;  // (T, B, D*H): dL/dh_t from the layer's output (grad_z's values on entry)
  const scalar_t* output;    // (T, B, D*H): the forward's h_t
  const scalar_t* weight;    // (D, H, H): W_hh
  const acc_t* grad_h_in;    // (D, B, H): dL/dh_t from the steps after t
  acc_t* grad_h_out;         // (D, B, H): dL/dh_{t-1}; the two swap every step
  int B, H, D, col_tiles;
  StepRows step[2];
};

// What the backward's operand dL/dz_t at one (row, unit) is computed from: dL/dh_t from the layer's output and
// from the steps after, and h_t.
template <typename scalar_t, typename acc_t>
struct StepGradInputs {
  scalar_t grad_out, output;
  acc_t grad_h;
};

// The block's direction, and the first batch row and column of its tile.
struct Tile {
  int d, row0, col0;
};

template <typename Params>
__device__ __forceinline__ Tile block_tile(const Params& p) {
  return Tile{static_cast<int>(blockIdx.x) / p.col_tiles, static_cast<int>(blockIdx.y) * kTileRows,
              static_cast<int>(blockIdx.x) % p.col_tiles * kTileCols};
}

// The direction's rows, selected rather than indexed: a runtime index into the parameters would copy them to the
// stack (local memory).
template <typename Params>
__device__ __forceinline__ StepRows step_rows(const Params& p, int d) {
  return d == 0 ? p.step[0] : p.step[1];
}

template <typename scalar_t, typename acc_t, Activation A>
__global__ void __launch_bounds__(kThreads, blocks_per_sm<acc_t>()) forward_step_kernel(ForwardParams<scalar_t> p) {
  RNNFAST_STEP_SHARED(acc_t, smem);
  const Tile tile = block_tile(p);
  const StepRows st = step_rows(p, tile.d);
  const int64_t ld = static_cast<int64_t>(p.D) * p.H;
  scalar_t* out_t = p.output + st.t * p.B * ld + tile.d * p.H;
  const scalar_t* out_prev = p.output + st.prev_t * p.B * ld + tile.d * p.H;
  const scalar_t* h0 = p.hx + static_cast<int64_t>(tile.d) * p.B * p.H;
  // h_{t-1}: the previous step's output for rows that ran it, hx for rows starting now, 0 for rows not running.
  auto h_prev = [&](int r, int k) -> scalar_t {
    const int b = tile.row0 + r;
    if (b >= st.rows) return scalar_t(0);
    const scalar_t* row = b < st.continuing ? out_prev + b * ld : h0 + static_cast<int64_t>(b) * p.H;
    return row[k];
  };
  acc_t recurrent[step_product::kMicro];  // h_{t-1} W_hh^T at this thread's four results
  const scalar_t* panel = p.weight_t + static_cast<int64_t>(tile.d) * p.H * p.H + tile.col0;
  step_product::tile_product<scalar_t, acc_t>(h_prev, step_product::Widen<acc_t>(), panel, p.H, p.H, p.H - tile.col0,
                                              smem, recurrent);
  // This thread's results: row b, columns j0 .. j0 + 3. Their pre-activations (x_t W_ih^T + b) are all loaded
  // before any h_t is stored: the compiler cannot tell that a store does not alias a later load, and would wait out
  // each load in turn.
  const int b = tile.row0 + step_product::result_row(), j0 = tile.col0 + step_product::result_col();
  if (b >= p.B) return;
  scalar_t* z = out_t + b * ld + j0;
  scalar_t pre[step_product::kMicro];
#pragma unroll
  for (int c = 0; c < step_product::kMicro; ++c) pre[c] = b < st.rows && j0 + c < p.H ? z[c] : scalar_t(0);
#pragma unroll
  for (int c = 0; c < step_product::kMicro; ++c) {
    const int j = j0 + c;
    if (j >= p.H) break;
    if (b >= st.rows) {
      z[c] = scalar_t(0);
      continue;
    }
    const scalar_t h = static_cast<scalar_t>(ActivationFn<A>::forward(static_cast<acc_t>(pre[c]) + recurrent[c]));
    z[c] = h;
    if (b >= st.rows_next) p.h_n[(static_cast<int64_t>(tile.d) * p.B + b) * p.H + j] = h;
  }
}

template <typename scalar_t, typename acc_t, Activation A>
__global__ void __launch_bounds__(kThreads, blocks_per_sm<acc_t>())
    backward_step_kernel(BackwardParams<scalar_t, acc_t> p) {
  RNNFAST_STEP_SHARED(acc_t, smem);
  const Tile tile = block_tile(p);
  const StepRows st = step_rows(p, tile.d);
  const int64_t ld = static_cast<int64_t>(p.D) * p.H;
  const int64_t step_offset = st.t * p.B * ld + tile.d * p.H;
  const int64_t state_offset = static_cast<int64_t>(tile.d) * p.B * p.H;
  // The operand is dL/dz_t, rounded to scalar_t as it is stored; the blocks of the first column tile, which
  // stage every column of their rows, store it (grad_out is read instead of grad_z, so no block reads a value
  // another has overwritten).
  const bool stores_grad_z = tile.col0 == 0;
  auto fetch = [&](int r, int j) -> StepGradInputs<scalar_t, acc_t> {
    const int b = tile.row0 + r;
    if (b >= st.rows) return {scalar_t(0), scalar_t(0), acc_t(0)};
    const int64_t at = step_offset + b * ld + j;
    return {p.grad_out[at], p.output[at], p.grad_h_in[state_offset + b * p.H + j]};
  };
  auto grad_z_t = [&](int r, int j, const StepGradInputs<scalar_t, acc_t>& in) -> acc_t {
    const int b = tile.row0 + r;
    if (b >= p.B) return acc_t(0);
    scalar_t g = scalar_t(0);
    if (b < st.rows) {
      const acc_t grad_h = static_cast<acc_t>(in.grad_out) + in.grad_h;
      g = static_cast<scalar_t>(ActivationFn<A>::backward_from_output(grad_h, static_cast<acc_t>(in.output)));
    }
    if (stores_grad_z) p.grad_z[step_offset + b * ld + j] = g;
    return static_cast<acc_t>(g);
  };
  acc_t grad_prev[step_product::kMicro];  // dL/dz_t W_hh at this thread's four results
  // Four rows' three loads in flight at a time: eight spilled out of the registers blocks_per_sm leaves a thread.
  constexpr int kRowsInFlight = 4;
  const scalar_t* panel = p.weight + static_cast<int64_t>(tile.d) * p.H * p.H + tile.col0;
  step_product::tile_product<scalar_t, acc_t, kRowsInFlight>(fetch, grad_z_t, panel, p.H, p.H, p.H - tile.col0, smem,
                                                             grad_prev);
  const int b = tile.row0 + step_product::result_row();
  if (b >= p.B) return;
#pragma unroll
  for (int c = 0; c < step_product::kMicro; ++c) {
    const int k = tile.col0 + step_product::result_col() + c;
    if (k >= p.H) break;
    const int64_t at = state_offset + b * p.H + k;
    // Rows not running this step keep the gradient they hold.
    p.grad_h_out[at] = b < st.rows ? grad_prev[c] : p.grad_h_in[at];
  }
}

// ---- Host side.

// Whether the kernels' int sizes hold the layer, and the grid's rows of tiles fit its y dimension.
inline bool supported(const ElmanSizes& s) {
  constexpr int64_t int_max = 2147483647;
  return s.B * s.D * s.H <= int_max && s.H * s.H <= int_max && step_product::rows_fit_grid(s.B);
}

// A step's product (B x H) for each direction, the directions side by side along x.
inline dim3 step_grid(const ElmanSizes& s) {
  dim3 grid = step_product::product_grid(s.B, s.H);
  grid.x *= static_cast<unsigned>(s.D);
  return grid;
}

template <typename Params>
void set_sizes(Params& p, const ElmanSizes& s) {
  p.B = static_cast<int>(s.B);
  p.H = static_cast<int>(s.H);
  p.D = static_cast<int>(s.D);
  p.col_tiles = static_cast<int>(step_product::column_tiles(s.H));
}

// The recurrences of ForwardRecurrence / BackwardRecurrence (elman_layer.h). launch(kernel, params, grid, smem)
// runs one step's kernel on the current stream (or, in tests/cuda_emulation, on CPU threads).
template <typename scalar_t, typename acc_t, Activation A, typename Launch>
void forward_recurrence(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh, at::Tensor& h_n,
                        const ElmanSizes& s, const int64_t* batch_sizes, Launch&& launch) {
  // Transposed once per call, so that the panel's rows (one k each) are read along their length.
  const at::Tensor weight_t = weight_hh.transpose(1, 2).contiguous();
  ForwardParams<scalar_t> p{};
  set_sizes(p, s);
  p.output = output.data_ptr<scalar_t>();
  p.hx = hx.const_data_ptr<scalar_t>();
  p.weight_t = weight_t.const_data_ptr<scalar_t>();
  p.h_n = h_n.data_ptr<scalar_t>();
  for (int64_t i = 0; i < s.T; ++i) {
    for (int64_t d = 0; d < s.D; ++d) {
      StepRows& st = p.step[d];
      st.t = step_at(d, i, s.T);
      st.rows = static_cast<int>(rows_at(batch_sizes, st.t, s.B));
      st.prev_t = i == 0 ? st.t : step_at(d, i - 1, s.T);
      st.continuing = i == 0 ? 0 : std::min(st.rows, static_cast<int>(rows_at(batch_sizes, st.prev_t, s.B)));
      st.rows_next = i + 1 == s.T ? 0 : static_cast<int>(rows_at(batch_sizes, step_at(d, i + 1, s.T), s.B));
    }
    launch(forward_step_kernel<scalar_t, acc_t, A>, p, step_grid(s), step_product::shared_bytes<acc_t>());
  }
}

template <typename scalar_t, typename acc_t, Activation A, typename Launch>
void backward_recurrence(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                         const at::Tensor& weight_hh, const ElmanSizes& s, const int64_t* batch_sizes,
                         Launch&& launch) {
  const at::Tensor grad_out = grad_z.clone();
  const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
  // (2, D, B, H): dL/dh of the step being run and of the one before it, in acc_t across steps.
  at::Tensor grad_h_acc = at::empty({2, s.D, s.B, s.H}, grad_h.options().dtype(acc_type));
  grad_h_acc[0].copy_(grad_h);
  BackwardParams<scalar_t, acc_t> p{};
  set_sizes(p, s);
  p.grad_z = grad_z.data_ptr<scalar_t>();
  p.grad_out = grad_out.const_data_ptr<scalar_t>();
  p.output = output.const_data_ptr<scalar_t>();
  p.weight = weight_hh.const_data_ptr<scalar_t>();
  acc_t* buffers[2] = {grad_h_acc[0].data_ptr<acc_t>(), grad_h_acc[1].data_ptr<acc_t>()};
  int current = 0;
  for (int64_t i = s.T - 1; i >= 0; --i) {
    for (int64_t d = 0; d < s.D; ++d) {
      StepRows& st = p.step[d];
      st.t = step_at(d, i, s.T);
      st.rows = static_cast<int>(rows_at(batch_sizes, st.t, s.B));
    }
    p.grad_h_in = buffers[current];
    p.grad_h_out = buffers[1 - current];
    launch(backward_step_kernel<scalar_t, acc_t, A>, p, step_grid(s), step_product::shared_bytes<acc_t>());
    current = 1 - current;
  }
  grad_h.copy_(grad_h_acc[current]);
}

}  // namespace elman_fused_step
}  // namespace cuda
}  // namespace rnnfast
