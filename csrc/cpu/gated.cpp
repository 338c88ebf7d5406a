// The CPU loop over time of a gated layer, forward and backward, for any cell description of gate_math.h:
// per step and direction one product for the recurrent term (register tiles or BLAS), then the cell's pointwise
// function over the running rows in one pass (gates, state update and saved quantities together). Each direction,
// and each group of batch rows, is a loop of its own on a thread of its own (parallel_loops.h). The LSTM and GRU
// ops are these loops instantiated with LstmCell and GruCell.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "../gate_math.h"
#include "../gated_layer.h"
#include "../widened.h"
#include "blas.h"
#include "parallel_loops.h"
#include "reused_buffer.h"
#include "simd_target.h"
#include "small_step.h"
#include "transpose.h"

namespace rnnfast {
namespace cpu {
namespace {

// Zeros rows [from, B) of a step's slice (rows of `width` values at stride ld): the steps past a row's length.
template <typename scalar_t>
void zero_rows(scalar_t* slice, int64_t from, int64_t B, int64_t width, int64_t ld) {
  for (int64_t b = from; b < B; ++b) std::fill_n(slice + b * ld, width, scalar_t(0));
}

// The pointwise pass of one step over its running rows, forward: the cell's gates, state update and saved
// quantities, one hidden unit per SIMD lane.
template <typename scalar_t>
struct ForwardCells {
  const scalar_t* gates_x;  // row b at gates_x + b * ld_gates, G*H values
  int64_t ld_gates;
  const scalar_t* gates_h;  // row b at gates_h + b * ld_gates_h: h_{t-1} W_hh^T, G*H values
  int64_t ld_gates_h;       // G*H, or 0 where one row serves every batch row (CellSpec::sums_gates)
  const scalar_t* bias_h;   // (G*H) or nullptr
  scalar_t* ws;             // row b at ws + b * ld_ws, W*H values
  int64_t ld_ws;
  const scalar_t* h;        // (rows, P): h_{t-1}, read by cells with a direct hidden path (then P == H)
  scalar_t* c;              // (rows, H): c_{t-1} in, c_t out; or nullptr
  scalar_t* cell_out;       // (rows, H): the cell's output (h_t, or m_t before the projection); may alias h
  int64_t rows, H, P;
};

template <typename Cell, typename scalar_t>
RNNFAST_ALWAYS_INLINE void forward_cells_body(const ForwardCells<scalar_t>& p) {
  for (int64_t b = 0; b < p.rows; ++b) {
    const scalar_t* gx = p.gates_x + b * p.ld_gates;
    const scalar_t* gh = p.gates_h + b * p.ld_gates_h;
    scalar_t* ws = p.ws + b * p.ld_ws;
    const scalar_t* h = p.h + b * p.P;
    scalar_t* c = p.c ? p.c + b * p.H : nullptr;
    scalar_t* out = p.cell_out + b * p.H;
    const int64_t H = p.H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      // Only a cell with a direct hidden path reads h_{t-1} here (with a projection, h is narrower than H).
      const scalar_t h_prev = Cell::spec.direct_hidden_path ? h[j] : scalar_t(0);
      out[j] = Cell::forward(gx, gh, p.bias_h, h_prev, c, ws, j, H);
    }
  }
}

// The pointwise pass of one step over its running rows, backward.
template <typename scalar_t>
struct BackwardCells {
  const scalar_t* grad_out;  // row b at grad_out + b * ld_grad_out: dL/d(cell output), H values
  int64_t ld_grad_out;
  const scalar_t* ws;        // row b at ws + b * ld_ws
  int64_t ld_ws;
  const scalar_t* prev_h;    // row b at prev_h + b * ld_prev: h_{t-1}
  int64_t ld_prev;
  scalar_t* grad_gates_x;    // row b at + b * ld_gates
  scalar_t* grad_gates_h;    // the same layout; equal to grad_gates_x for cells without a separate one
  int64_t ld_gates;
  scalar_t* grad_c;          // (rows, H): dL/dc_t in, dL/dc_{t-1} out; or nullptr
  scalar_t* grad_h_direct;   // (rows, P): written by cells with a direct hidden path
  int64_t rows, H, P;
};

template <typename Cell, typename scalar_t>
RNNFAST_ALWAYS_INLINE void backward_cells_body(const BackwardCells<scalar_t>& p) {
  for (int64_t b = 0; b < p.rows; ++b) {
    const scalar_t* g = p.grad_out + b * p.ld_grad_out;
    const scalar_t* ws = p.ws + b * p.ld_ws;
    const scalar_t* prev = p.prev_h + b * p.ld_prev;
    scalar_t* dgx = p.grad_gates_x + b * p.ld_gates;
    scalar_t* dgh = p.grad_gates_h + b * p.ld_gates;
    scalar_t* dc = p.grad_c ? p.grad_c + b * p.H : nullptr;
    scalar_t* direct = p.grad_h_direct + b * p.P;
    const int64_t H = p.H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t h_prev = Cell::spec.direct_hidden_path ? prev[j] : scalar_t(0);
      Cell::backward(g[j], dc, ws, h_prev, dgx, dgh, direct, j, H);
    }
  }
}

// Each pointwise pass compiled three times: for the baseline x86-64 target (SSE2, what the extension is built
// for), for AVX2 with FMA and for AVX-512, picked at run time from the CPU. The gates' tanh and sigmoid are most
// of a small layer's loop time, and AVX-512 runs 16 float32 units a step where SSE2 runs 4. All three give the
// same bits: the build leaves a * b + c unfused, and tanh_float's fused multiply-adds are written std::fma.
#define RNNFAST_CELLS_VARIANT(SUFFIX, TARGET_ATTRIBUTE)                             \
  template <typename Cell, typename scalar_t>                                       \
  TARGET_ATTRIBUTE void forward_cells_##SUFFIX(const ForwardCells<scalar_t>& p) {   \
    forward_cells_body<Cell>(p);                                                    \
  }                                                                                 \
  template <typename Cell, typename scalar_t>                                       \
  TARGET_ATTRIBUTE void backward_cells_##SUFFIX(const BackwardCells<scalar_t>& p) { \
    backward_cells_body<Cell>(p);                                                   \
  }
RNNFAST_CELLS_VARIANT(baseline, )
#if RNNFAST_HAVE_AVX512_VARIANT
RNNFAST_CELLS_VARIANT(avx2, RNNFAST_TARGET_AVX2)
RNNFAST_CELLS_VARIANT(avx512, RNNFAST_TARGET_AVX512)
#endif
#undef RNNFAST_CELLS_VARIANT

template <typename Cell, typename scalar_t>
auto pick_forward_cells() {
#if RNNFAST_HAVE_AVX512_VARIANT
  if (cpu_has_avx512()) return &forward_cells_avx512<Cell, scalar_t>;
  if (cpu_has_avx2()) return &forward_cells_avx2<Cell, scalar_t>;
#endif
  return &forward_cells_baseline<Cell, scalar_t>;
}

template <typename Cell, typename scalar_t>
auto pick_backward_cells() {
#if RNNFAST_HAVE_AVX512_VARIANT
  if (cpu_has_avx512()) return &backward_cells_avx512<Cell, scalar_t>;
  if (cpu_has_avx2()) return &backward_cells_avx2<Cell, scalar_t>;
#endif
  return &backward_cells_baseline<Cell, scalar_t>;
}

// The weights M (K, N) of one direction's per-step product, as the product reads them: row-major for BLAS, or
// packed (small_step.h) for the register tiles, as use_fused_step decides once per call.
template <typename scalar_t>
struct StepWeights {
  const scalar_t* data;  // (K, N) row-major, or its packed form
  bool packed;
  int64_t K, N;
};

// Every direction's StepWeights of weights (D, K, N), contiguous: the weights themselves for BLAS, or their
// packed forms, written into `holder` (D, packed_size) for the call's lifetime.
template <typename scalar_t>
std::vector<StepWeights<scalar_t>> step_weights(const at::Tensor& weights, bool packed, at::Tensor& holder) {
  const int64_t D = weights.size(0), K = weights.size(1), N = weights.size(2);
  const scalar_t* w = weights.const_data_ptr<scalar_t>();
  std::vector<StepWeights<scalar_t>> per_direction;
  if (packed) {
    const int64_t size = packed_size<scalar_t>(K, N);
    holder = at::empty({D, size}, weights.options());
    for (int64_t d = 0; d < D; ++d) pack_weights(holder.data_ptr<scalar_t>() + d * size, w + d * K * N, N, K, N);
    w = holder.const_data_ptr<scalar_t>();
    for (int64_t d = 0; d < D; ++d) per_direction.push_back({w + d * size, true, K, N});
  } else {
    for (int64_t d = 0; d < D; ++d) per_direction.push_back({w + d * K * N, false, K, N});
  }
  return per_direction;
}

// One call's per-step weights for every direction, W_hh's and with a projection W_hr's, as the products read them
// (use_fused_step decides once per call for the layer of hidden size H): w_hh (D, K, N) and w_hr (D, ., .) or
// undefined, contiguous, and alive as long as these are used. groups: on entry the row groups the tiles would
// split the loop's rows into (row_groups, splittable); on return the groups the loop runs, all rows in one when
// the products are BLAS's, which split each product over their own threads. On Intel CPUs MKL's product beat the
// tiles for a whole batch in one loop at every size measured; with the rows split over 2 threads, the tiles were
// 1.1x-1.7x faster forward and training than MKL's own threads at hidden 64-256, batch 8-64, and 0.75x-0.95x at
// 384-1024 (Intel Xeon).
template <typename scalar_t>
struct LoopWeights {
  at::Tensor packed_hh, packed_hr;            // (D, packed size) when the tiles run, else undefined
  std::vector<StepWeights<scalar_t>> hh, hr;  // per direction; hr empty without a projection

  LoopWeights(const at::Tensor& w_hh, const at::Tensor& w_hr, int64_t H, std::vector<RowRange>& groups) {
    const bool tiles = use_fused_step_for_groups(H, kSmallStepMaxHidden, 0, groups);
    hh = step_weights<scalar_t>(w_hh, tiles, packed_hh);
    if (w_hr.defined()) hr = step_weights<scalar_t>(w_hr, tiles, packed_hr);
  }
  const StepWeights<scalar_t>* hr_of(int64_t d) const { return hr.empty() ? nullptr : &hr[d]; }
};

// C (rows x N) = A (rows x K) @ M, added onto C when accumulate; A and C row-major at strides lda and ldc.
template <typename scalar_t>
void step_gemm(const StepWeights<scalar_t>& M, int64_t rows, const scalar_t* A, int64_t lda, bool accumulate,
               scalar_t* C, int64_t ldc) {
  if (M.packed) {
    step_product<scalar_t>(C, ldc, A, lda, M.data, rows, M.K, M.N, accumulate);
  } else {
    gemm_row_major<scalar_t>(false, rows, M.N, M.K, A, lda, M.data, M.N, accumulate ? 1 : 0, C, ldc);
  }
}

// The steps of the input projection computed together: as many as fill about this many bytes of gates_x, so
// that the block is still in cache when the loop reads it, and its buffer is reused rather than a fresh
// (T, B, D*G*H) one paid for in page faults on every call.
constexpr int64_t kProjectionBlockBytes = int64_t(1) << 20;
// But never fewer steps than give the block's product this many rows (steps * B): each product call packs all of
// W_ih afresh, which the rows must amortise. Measured on an Intel Xeon (MKL), float32 inference: blocks of 64 rows
// (a megabyte at hidden 1024) took 1.07x-1.27x as long as blocks of 512 rows on one thread and 1.05x-1.09x on
// two, blocks of 128 rows at hidden 512 0.98x-1.09x (BENCHMARKS.md); at hidden <= 128 a megabyte holds 512 rows
// or more.
constexpr int64_t kProjectionMinRows = 512;

int64_t projection_block_steps(const GatedSizes& s, int64_t element_size) {
  const int64_t step_bytes = std::max<int64_t>(1, s.B * s.G * s.H * element_size);
  const int64_t for_rows = (kProjectionMinRows + s.B - 1) / std::max<int64_t>(s.B, 1);
  return std::clamp<int64_t>(std::max(kProjectionBlockBytes / step_bytes, for_rows), 1, std::max<int64_t>(s.T, 1));
}

// gates_x of direction d for `count` steps from `first`: x_t W_ih[d]^T, plus bias_x[d] when with_bias, into block
// (count*B, G*H).
template <typename scalar_t>
void project_steps(const GatedForwardBuffers& buf, const GatedSizes& s, int64_t d, int64_t first, int64_t count,
                   bool with_bias, scalar_t* block) {
  const int64_t GH = s.G * s.H, rows = count * s.B;
  const scalar_t* bias =
      with_bias && buf.bias_x.defined() ? buf.bias_x.const_data_ptr<scalar_t>() + d * GH : nullptr;
  // As addmm: the bias into every row, the product added onto it.
  if (bias) {
    for (int64_t r = 0; r < rows; ++r) std::copy_n(bias, GH, block + r * GH);
  }
  if (s.I == 0) {  // no product: the bias alone, or zeros
    if (!bias) std::fill_n(block, rows * GH, scalar_t(0));
    return;
  }
  gemm_row_major<scalar_t>(true, rows, GH, s.I, buf.input.const_data_ptr<scalar_t>() + first * s.B * s.I, s.I,
                           buf.weight_ih.const_data_ptr<scalar_t>() + d * GH * s.I, s.I, bias ? 1 : 0, block, GH);
}

// The running state of one direction's loop: h (B, P), c (B, H) or null, and its per-step scratch, gates_h
// (B, G*H) for h_{t-1} W_hh^T and m (B, H) for the cell output before the projection (null without one, when the
// cell writes h directly). Row b of each belongs to the loop of b's group. A cell that sums its gates
// (CellSpec::sums_gates) has its recurrent product added onto gates_x instead, gates_h null, and summed_bias
// (G*H), the bias the layer sums up front (or zeros), added by its pointwise pass; for other cells it is null.
template <typename scalar_t>
struct DirectionState {
  scalar_t* h;
  scalar_t* c;
  scalar_t* gates_h;
  scalar_t* m;
  const scalar_t* summed_bias;
};

template <typename Cell, typename scalar_t>
void forward_steps(GatedForwardBuffers& buf, const StepWeights<scalar_t>& w_hh, const StepWeights<scalar_t>* w_hr,
                   const DirectionState<scalar_t>& state, scalar_t* gates_block, int64_t block_first,
                   int64_t count, const GatedSizes& s, int64_t d, const int64_t* batch_sizes, RowRange group) {
  // Runs direction d's steps block_first .. block_first + count - 1 (in the direction's order) for the rows of
  // `group`. w_hh: this direction's W_hh^T (P, G*H) and w_hr its W_hr^T (H, P) as the step products read them
  // (see forward_recurrence_cpu), w_hr nullptr without a projection; gates_block: (count * B, G*H), gates_x of
  // those steps, the recurrent product added onto it in place when the cell sums its gates.
  const int64_t B = s.B, H = s.H, P = s.P, GH = s.G * s.H, WH = s.W * s.H, r0 = group.begin, n = group.size();
  const int64_t ld_out = s.D * P, ld_ws = s.D * WH, ws_step = workspace_step_stride(buf, s);
  scalar_t* out = buf.output.data_ptr<scalar_t>() + d * P + r0 * ld_out;   // same layout, stride ld_out
  scalar_t* ws = buf.workspace.data_ptr<scalar_t>() + d * WH + r0 * ld_ws;  // same layout, stride ld_ws
  scalar_t* h = state.h + r0 * P;
  scalar_t* c = state.c ? state.c + r0 * H : nullptr;
  scalar_t* gates_h = state.gates_h ? state.gates_h + r0 * GH : nullptr;
  scalar_t* m = state.m ? state.m + r0 * H : nullptr;
  const scalar_t* bias_h = buf.bias_h.defined() ? buf.bias_h.data_ptr<scalar_t>() + d * GH : nullptr;  // (G*H)
  const auto forward_cells = pick_forward_cells<Cell, scalar_t>();
  // Rows not running at a step keep their h and c: in the forward direction a finished row's last state, in the
  // reverse direction hx and cx until the row's own last step comes round. So h and c end as h_n and c_n.
  for (int64_t j = 0; j < count; ++j) {
    const int64_t t = d == 0 ? block_first + j : block_first + count - 1 - j;
    const int64_t rows = rows_running(batch_sizes, t, B, group);
    scalar_t* gx_t = gates_block + ((t - block_first) * B + r0) * GH;
    scalar_t* out_t = out + t * B * ld_out;
    scalar_t* ws_t = ws + t * ws_step;
    if (state.summed_bias) {
      // gates_x += h_{t-1} W_hh^T in place, and the bias as the one row of gates_h: the bias costs no pass over
      // the gates (at batch 16-32, hidden 64-256 writing it into every row of gates_x took 3%-5% of a forward).
      step_gemm<scalar_t>(w_hh, rows, h, P, true, gx_t, GH);
      forward_cells({gx_t, GH, state.summed_bias, 0, bias_h, ws_t, ld_ws, h, c, m ? m : h, rows, H, P});
    } else {
      step_gemm<scalar_t>(w_hh, rows, h, P, false, gates_h, GH);
      forward_cells({gx_t, GH, gates_h, GH, bias_h, ws_t, ld_ws, h, c, m ? m : h, rows, H, P});
    }
    if (m) step_gemm<scalar_t>(*w_hr, rows, m, H, false, h, P);
    for (int64_t b = 0; b < rows; ++b) std::copy_n(h + b * P, P, out_t + b * ld_out);
    zero_rows(out_t, rows, n, P, ld_out);
    zero_rows(ws_t, rows, n, WH, ld_ws);
  }
}

template <typename Cell, typename scalar_t>
void backward_direction(GatedBackwardBuffers& buf, const StepWeights<scalar_t>& w_hh,
                        const StepWeights<scalar_t>* w_hr, scalar_t* grad_m, const GatedSizes& s, int64_t d,
                        const int64_t* batch_sizes, RowRange group) {
  // w_hh: this direction's W_hh (G*H, P) and w_hr its W_hr (P, H) as the step products read them, w_hr nullptr
  // without a projection; grad_m: (B, H) scratch for dL/dm_t through the projection, or nullptr without one.
  // Only the rows of `group` are read and written.
  const int64_t B = s.B, H = s.H, P = s.P, GH = s.G * s.H, WH = s.W * s.H, r0 = group.begin, n = group.size();
  const int64_t ld_gates = s.D * GH, ld_out = s.D * P, ld_ws = s.D * WH;
  scalar_t* grad_h_seq = buf.grad_h_seq.data_ptr<scalar_t>() + d * P + r0 * ld_out;  // step t at t*B*ld_out
  scalar_t* grad_gx = buf.grad_gates_x.data_ptr<scalar_t>() + d * GH + r0 * ld_gates;  // stride ld_gates
  scalar_t* grad_gh = buf.grad_gates_h.defined() ? buf.grad_gates_h.data_ptr<scalar_t>() + d * GH + r0 * ld_gates
                                                 : grad_gx;
  const scalar_t* prev_h = buf.prev_h.data_ptr<scalar_t>() + d * P + r0 * ld_out;     // stride ld_out
  const scalar_t* ws = buf.workspace.data_ptr<scalar_t>() + d * WH + r0 * ld_ws;      // stride ld_ws
  scalar_t* carry_h = buf.grad_h.data_ptr<scalar_t>() + (d * B + r0) * P;  // (n, P) dL/dh of the step after
  scalar_t* carry_c = buf.grad_c.defined() ? buf.grad_c.data_ptr<scalar_t>() + (d * B + r0) * H : nullptr;  // (n, H)
  if (grad_m) grad_m += r0 * H;
  const bool separate = buf.grad_gates_h.defined();
  const auto backward_cells = pick_backward_cells<Cell, scalar_t>();
  for (int64_t i = s.T - 1; i >= 0; --i) {
    const int64_t t = step_at(d, i, s.T), rows = rows_running(batch_sizes, t, B, group);
    scalar_t* dh_t = grad_h_seq + t * B * ld_out;
    for (int64_t b = 0; b < rows; ++b) {
      scalar_t* dh = dh_t + b * ld_out;
      const scalar_t* carried = carry_h + b * P;
      for (int64_t j = 0; j < P; ++j) dh[j] += carried[j];
    }
    zero_rows(dh_t, rows, n, P, ld_out);
    if (grad_m) step_gemm<scalar_t>(*w_hr, rows, dh_t, ld_out, false, grad_m, H);
    scalar_t* dgx_t = grad_gx + t * B * ld_gates;
    scalar_t* dgh_t = grad_gh + t * B * ld_gates;
    const scalar_t* ws_t = ws + t * B * ld_ws;
    const scalar_t* prev_t = prev_h + t * B * ld_out;
    backward_cells({grad_m ? grad_m : dh_t, grad_m ? H : ld_out, ws_t, ld_ws, prev_t, ld_out, dgx_t, dgh_t, ld_gates,
                    carry_c, carry_h, rows, H, P});
    zero_rows(dgx_t, rows, n, GH, ld_gates);
    if (separate) zero_rows(dgh_t, rows, n, GH, ld_gates);
    // dL/dh_{t-1} for the running rows: the recurrent product, added to the direct part where the cell wrote one.
    // The other rows keep the gradient they already hold.
    step_gemm<scalar_t>(w_hh, rows, dgh_t, ld_gates, Cell::spec.direct_hidden_path, carry_h, P);
  }
}

// Multiply-adds of one row's step in the loop's products: h_{t-1} W_hh^T, and with a projection m_t W_hr^T.
int64_t step_work(const GatedSizes& s, bool projected) { return s.P * s.G * s.H + (projected ? s.H * s.P : 0); }

template <typename Cell>
void forward_recurrence_cpu(GatedForwardBuffers& buf, const GatedSizes& s, const int64_t* batch_sizes) {
  AT_DISPATCH_FLOATING_TYPES(buf.output.scalar_type(), "gated_forward_cpu", [&] {
    // Allocated once per call, never inside the loop over time.
    constexpr bool sums_gates = Cell::spec.sums_gates;
    const int64_t GH = s.G * s.H;
    at::Tensor gates_h = sums_gates ? at::Tensor() : at::empty({s.D, s.B, GH}, buf.output.options());  // (D, B, G*H)
    at::Tensor summed_bias = !sums_gates          ? at::Tensor()
                             : buf.bias_x.defined() ? buf.bias_x
                                                    : at::zeros({s.D * GH}, buf.output.options());  // (D*G*H)
    at::Tensor m = buf.weight_hr.defined() ? at::empty({s.D, s.B, s.H}, buf.output.options())  // (D, B, H)
                                           : at::Tensor();
    // The per-step products read the weights transposed, h @ (W^T stored contiguous), which BLAS runs up to
    // twice as fast as h @ W^T from W's own layout at the small row counts of one step (measured on MKL), and
    // which the register tiles read packed.
    const at::Tensor w_hh_t = transposed_weights(buf.weight_hh);  // (D, P, G*H)
    const at::Tensor w_hr_t = buf.weight_hr.defined() ? transposed_weights(buf.weight_hr) : at::Tensor();  // (D, H, P)
    auto groups = row_groups(s.D, s.B, s.T, batch_sizes, step_work(s, m.defined()), true);
    const LoopWeights<scalar_t> w(w_hh_t, w_hr_t, s.H, groups);
    const int64_t block_steps = projection_block_steps(s, sizeof(scalar_t));
    at::Tensor gates_block = at::empty({s.D, block_steps * s.B, s.G * s.H}, buf.output.options());  // (D, ., G*H)
    std::vector<DirectionState<scalar_t>> state;
    for (int64_t d = 0; d < s.D; ++d) {
      state.push_back({buf.h.data_ptr<scalar_t>() + d * s.B * s.P,
                       buf.c.defined() ? buf.c.data_ptr<scalar_t>() + d * s.B * s.H : nullptr,
                       sums_gates ? nullptr : gates_h.data_ptr<scalar_t>() + d * s.B * GH,
                       m.defined() ? m.data_ptr<scalar_t>() + d * s.B * s.H : nullptr,
                       sums_gates ? summed_bias.const_data_ptr<scalar_t>() + d * GH : nullptr});
    }
    // Block k of each direction's steps, in the direction's order: the reverse direction takes the blocks from the
    // end. project(d, k) writes direction d's gates_x of its block k into its gates_block and returns the block's
    // first step and step count.
    const int64_t blocks = (s.T + block_steps - 1) / block_steps;
    const int64_t block_size = block_steps * s.B * s.G * s.H;  // values of one direction's gates_block
    auto project = [&](int64_t d, int64_t k) {
      const int64_t first = (d == 0 ? k : blocks - 1 - k) * block_steps, count = std::min(block_steps, s.T - first);
      project_steps(buf, s, d, first, count, !sums_gates, gates_block.data_ptr<scalar_t>() + d * block_size);
      return std::pair<int64_t, int64_t>(first, count);
    };
    auto run = [&](int64_t d, RowRange group, std::pair<int64_t, int64_t> block) {
      forward_steps<Cell, scalar_t>(buf, w.hh[d], w.hr_of(d), state[d],
                                    gates_block.data_ptr<scalar_t>() + d * block_size, block.first,
                                    block.second, s, d, batch_sizes, group);
    };
    if (groups.size() == 1) {
      // One loop per direction: each projects its own blocks, the directions side by side (measured at 2 threads,
      // bidirectional: 1.2x-1.5x faster forward than projecting both directions' blocks between parallel parts).
      for_each_loop(s.D, groups, [&](int64_t d, RowRange group) {
        for (int64_t k = 0; k < blocks; ++k) run(d, group, project(d, k));
      });
      return;
    }
    // Several groups of rows per direction: each block's projection is one product over all rows (the BLAS's own
    // threads), then every loop runs its rows through the block's steps.
    std::vector<std::pair<int64_t, int64_t>> block(s.D);  // (D): each direction's block, first step and count
    for (int64_t k = 0; k < blocks; ++k) {
      for (int64_t d = 0; d < s.D; ++d) block[d] = project(d, k);
      for_each_loop(s.D, groups, [&](int64_t d, RowRange group) { run(d, group, block[d]); });
    }
  });
}

template <typename Cell>
void backward_recurrence_cpu(GatedBackwardBuffers& buf, const GatedSizes& s, const int64_t* batch_sizes) {
  AT_DISPATCH_FLOATING_TYPES(buf.grad_h_seq.scalar_type(), "gated_backward_cpu", [&] {
    at::Tensor grad_m = buf.weight_hr.defined() ? at::empty({s.D, s.B, s.H}, buf.grad_h_seq.options())  // (D, B, H)
                                                : at::Tensor();
    // dL/dh_{t-1} = dL/dgates W_hh and dL/dm = dL/dh W_hr: the weights as stored, or packed for the tiles.
    const at::Tensor weight_hh = buf.weight_hh.contiguous();  // (D, G*H, P)
    const at::Tensor weight_hr = buf.weight_hr.defined() ? buf.weight_hr.contiguous() : at::Tensor();  // (D, P, H)
    auto groups = row_groups(s.D, s.B, s.T, batch_sizes, step_work(s, grad_m.defined()), true);
    const LoopWeights<scalar_t> w(weight_hh, weight_hr, s.H, groups);
    for_each_loop(s.D, groups, [&](int64_t d, RowRange group) {
      scalar_t* grad_m_d = grad_m.defined() ? grad_m.data_ptr<scalar_t>() + d * s.B * s.H : nullptr;
      backward_direction<Cell, scalar_t>(buf, w.hh[d], w.hr_of(d), grad_m_d, s, d, batch_sizes, group);
    });
  });
}

}  // namespace
}  // namespace cpu
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CPU, m) {
  using namespace rnnfast;
  // 16-bit layers run on float32 copies (widened.h).
  m.impl("lstm_layer_forward", &Widened<&lstm_layer_forward_op<cpu::forward_recurrence_cpu<LstmCell>>>::call);
  // dL/dgates in a buffer kept per thread between calls (reused_buffer.h).
  m.impl("lstm_layer_backward",
         &Widened<&lstm_layer_backward_op<cpu::backward_recurrence_cpu<LstmCell>, cpu::reused_buffer>>::call);
  m.impl("gru_layer_forward", &Widened<&gru_layer_forward_op<cpu::forward_recurrence_cpu<GruCell>>>::call);
  m.impl("gru_layer_backward",
         &Widened<&gru_layer_backward_op<cpu::backward_recurrence_cpu<GruCell>, cpu::reused_buffer>>::call);
}
