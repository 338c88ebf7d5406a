// The CPU loop over time of an Elman layer, forward and backward. Each direction, and each group of batch rows,
// is an independent loop, run on threads of its own (parallel_loops.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../cell_math.h"
#include "../elman_layer.h"
#include "../widened.h"
#include "blas.h"
#include "parallel_loops.h"
#include "reused_buffer.h"
#include "small_step.h"
#include "transpose.h"

namespace rnnfast {
namespace cpu {
namespace {

template <typename scalar_t, Activation A>
void forward_direction(scalar_t* out, const scalar_t* h0, const scalar_t* w_hh_t, const scalar_t* bias,
                       scalar_t* h_n, const ElmanSizes& s, int64_t d, const int64_t* batch_sizes, bool fused,
                       RowRange group) {
  // out: (T, B, D*H), this direction's columns start at d*H; h0, h_n: (B, H); w_hh_t: W_hh transposed (H, H);
  // bias: (H), added to every step's pre-activation here, or nullptr where out holds it. Only the rows of
  // `group` are read and written.
  const int64_t H = s.H, B = s.B, ld = s.D * s.H, n = group.size();
  auto z_at = [&](int64_t t) { return out + t * B * ld + d * H + group.begin * ld; };
  h0 += group.begin * H;
  int64_t prev_t = -1, prev_rows = 0;
  for (int64_t i = 0; i < s.T; ++i) {
    const int64_t t = step_at(d, i, s.T);
    const int64_t rows = rows_running(batch_sizes, t, B, group);
    scalar_t* z = z_at(t);
    // Rows that ran the previous step continue from its output; rows starting now (the first step, or a
    // shorter sequence joining a reverse pass) start from h0.
    const int64_t continuing = std::min(rows, prev_rows);
    if (fused) {
      if (continuing > 0) forward_step_small<scalar_t, A>(z, ld, bias, z_at(prev_t), ld, w_hh_t, H, continuing);
      forward_step_small<scalar_t, A>(z + continuing * ld, ld, bias, h0 + continuing * H, H, w_hh_t, H,
                                      rows - continuing);
    } else {
      if (continuing > 0) gemm_row_major<scalar_t>(false, continuing, H, H, z_at(prev_t), ld, w_hh_t, H, 1, z, ld);
      gemm_row_major<scalar_t>(false, rows - continuing, H, H, h0 + continuing * H, H, w_hh_t, H, 1,
                               z + continuing * ld, ld);
      activate_rows<scalar_t, A>(z, ld, bias, H, rows);
    }
    for (int64_t b = rows; b < n; ++b) std::fill_n(z + b * ld, H, scalar_t(0));
    prev_t = t;
    prev_rows = rows;
  }
  // Each row's last state: the reverse pass ends every row at t = 0, the forward pass at t = length - 1.
  for (int64_t b = group.begin; b < group.end; ++b) {
    int64_t last = 0;
    if (d == 0) {
      last = s.T - 1;
      while (batch_sizes && batch_sizes[last] <= b) --last;
    }
    std::copy_n(z_at(last) + (b - group.begin) * ld, H, h_n + b * H);
  }
}

template <typename scalar_t, Activation A>
void backward_direction(scalar_t* grad_z, scalar_t* grad_h, const scalar_t* out, const scalar_t* w_hh,
                        const ElmanSizes& s, int64_t d, const int64_t* batch_sizes, bool fused, RowRange group) {
  // grad_z, out: (T, B, D*H), this direction's columns start at d*H; grad_h: (B, H); w_hh: (H, H). Only the rows
  // of `group` are read and written.
  const int64_t H = s.H, B = s.B, ld = s.D * s.H, n = group.size();
  grad_h += group.begin * H;
  for (int64_t i = s.T - 1; i >= 0; --i) {
    const int64_t t = step_at(d, i, s.T);
    const int64_t rows = rows_running(batch_sizes, t, B, group);
    scalar_t* gz = grad_z + t * B * ld + d * H + group.begin * ld;
    const scalar_t* h = out + t * B * ld + d * H + group.begin * ld;
    for (int64_t b = rows; b < n; ++b) std::fill_n(gz + b * ld, H, scalar_t(0));
    // dL/dh_{t-1} = dL/dz_t W_hh for the running rows; the others keep the gradient they already hold.
    if (fused) {
      backward_step_small<scalar_t, A>(gz, h, ld, grad_h, w_hh, H, rows);
      continue;
    }
    activation_backward_rows<scalar_t, A>(gz, h, ld, grad_h, H, rows);
    gemm_row_major<scalar_t>(false, rows, H, H, gz, ld, w_hh, H, 0, grad_h, H);
  }
}

// Recurrent weights up to this many values are transposed into a buffer on the stack rather than a new tensor.
constexpr int64_t kSmallTransposeMax = 512;

// On Intel CPUs the Elman tiles run up to this hidden size when the loop splits its batch rows over threads (each
// thread its own rows), past kSmallStepMaxHidden: at 2 threads, batch 8-64, they were 1.04x-1.17x faster than
// MKL's threaded product at hidden 384-512 (training 1.00x-1.07x) and 0.53x-0.95x at 768-1024 (Intel Xeon).
constexpr int64_t kSplitStepMaxHidden = 512;

void forward_recurrence_cpu(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                            const at::Tensor& bias, at::Tensor& h_n, const ElmanSizes& s,
                            const int64_t* batch_sizes, bool relu) {
  AT_DISPATCH_FLOATING_TYPES(output.scalar_type(), "elman_forward_cpu", [&] {
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      scalar_t* out = output.data_ptr<scalar_t>();
      const scalar_t* h0 = hx.const_data_ptr<scalar_t>();
      scalar_t* hn = h_n.data_ptr<scalar_t>();
      const scalar_t* b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;  // (D*H) or none
      // Both step kernels read W_hh k-major, transposed once per call: the fused step needs it, and BLAS runs
      // h @ (W^T stored contiguous) up to twice as fast as h @ W^T from W's own layout at one step's row count
      // (measured on MKL: B=8, H=1024, 266 us against 546). Small ones go to the stack: at hidden 1 a new tensor
      // cost more than the loop.
      const scalar_t* wt = nullptr;
      at::Tensor w_t;                          // (D, H, H) above kSmallTransposeMax values
      scalar_t small_w_t[kSmallTransposeMax];  // (D, H, H) up to it
      if (s.D * s.H * s.H <= kSmallTransposeMax) {
        const scalar_t* w = weight_hh.const_data_ptr<scalar_t>();
        for (int64_t d = 0; d < s.D; ++d) transpose_into(small_w_t + d * s.H * s.H, w + d * s.H * s.H, s.H, s.H);
        wt = small_w_t;
      } else {
        w_t = transposed_weights(weight_hh);
        wt = w_t.const_data_ptr<scalar_t>();
      }
      auto groups = row_groups(s.D, s.B, s.T, batch_sizes, s.H * s.H, true);
      const bool fused = use_fused_step_for_groups(s.H, kSplitStepMaxHidden, kSmallStepMaxHidden, groups);
      for_each_loop(s.D, groups, [&](int64_t d, RowRange group) {
        forward_direction<scalar_t, act>(out, h0 + d * s.B * s.H, wt + d * s.H * s.H, b ? b + d * s.H : nullptr,
                                         hn + d * s.B * s.H, s, d, batch_sizes, fused, group);
      });
    });
  });
}

void backward_recurrence_cpu(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                             const at::Tensor& weight_hh, const ElmanSizes& s, const int64_t* batch_sizes,
                             bool relu) {
  AT_DISPATCH_FLOATING_TYPES(grad_z.scalar_type(), "elman_backward_cpu", [&] {
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      scalar_t* gz = grad_z.data_ptr<scalar_t>();
      scalar_t* gh = grad_h.data_ptr<scalar_t>();
      const scalar_t* out = output.const_data_ptr<scalar_t>();
      const scalar_t* w = weight_hh.const_data_ptr<scalar_t>();
      auto groups = row_groups(s.D, s.B, s.T, batch_sizes, s.H * s.H, true);
      const bool fused = use_fused_step_for_groups(s.H, kSplitStepMaxHidden, kSmallStepMaxHidden, groups);
      for_each_loop(s.D, groups, [&](int64_t d, RowRange group) {
        backward_direction<scalar_t, act>(gz, gh + d * s.B * s.H, out, w + d * s.H * s.H, s, d, batch_sizes, fused,
                                          group);
      });
    });
  });
}

// Up to these sizes the input projection is a loop here rather than a BLAS product: at the article's scale
// (input 1, hidden <= 8) the product's call, packing and bias broadcast cost several times its arithmetic.
// Measured at the bound on the whole work (one layer op, MKL, 1 thread): the loop was 4 us faster at T=32,
// I=H=16 and 18 us at T=1024, I=1, H=8; at four times the bound the product was 2 us faster.
constexpr int64_t kSmallProjectionMaxRowWork = 256;  // multiply-adds per (step, row): I * D * H
constexpr int64_t kSmallProjectionMaxWork = 1 << 13;  // multiply-adds in all: T * B * I * D * H

bool project_input_small(at::Tensor& output, const at::Tensor& input, const at::Tensor& weight_ih,
                         const c10::optional<at::Tensor>& bias, const ElmanSizes& s) {
  const int64_t N = s.D * s.H, rows = s.T * s.B;
  if (s.I * N > kSmallProjectionMaxRowWork || rows * s.I * N > kSmallProjectionMaxWork) return false;
  AT_DISPATCH_FLOATING_TYPES(output.scalar_type(), "elman_project_input_cpu", [&] {
    const scalar_t* x = input.const_data_ptr<scalar_t>();       // (T*B, I)
    const scalar_t* w = weight_ih.const_data_ptr<scalar_t>();   // (N, I)
    const scalar_t* b = bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr;  // (N)
    scalar_t* out = output.data_ptr<scalar_t>();                 // (T*B, N)
    // W_ih transposed, (I, N): each input feature's weights to all outputs contiguous, so the loop below runs
    // along the output columns.
    scalar_t w_t[kSmallProjectionMaxRowWork];
    transpose_into(w_t, w, N, s.I);
    for (int64_t r = 0; r < rows; ++r) {
      scalar_t* o = out + r * N;
      const scalar_t* xr = x + r * s.I;
      for (int64_t j = 0; j < N; ++j) o[j] = b ? b[j] : scalar_t(0);
      for (int64_t i = 0; i < s.I; ++i)
        for (int64_t j = 0; j < N; ++j) o[j] += xr[i] * w_t[i * N + j];
    }
  });
  return true;
}

std::tuple<at::Tensor, at::Tensor> elman_layer_forward_cpu(const at::Tensor& input, const at::Tensor& hx,
                                                           const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                                           const c10::optional<at::Tensor>& bias,
                                                           const c10::optional<at::Tensor>& batch_sizes, bool relu) {
  return elman_layer_forward_with(forward_recurrence_cpu, input, hx, weight_ih, weight_hh, bias, batch_sizes, relu,
                                  project_input_small, /*recurrence_adds_bias=*/true);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> elman_layer_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& output,
    const c10::optional<at::Tensor>& batch_sizes, bool relu) {
  return elman_layer_backward_with(backward_recurrence_cpu, grad_output, grad_h_n, input, hx, weight_ih, weight_hh,
                                   output, batch_sizes, relu, reused_buffer);
}

}  // namespace
}  // namespace cpu
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CPU, m) {
  // 16-bit layers run on float32 copies (widened.h).
  m.impl("elman_layer_forward", &rnnfast::Widened<&rnnfast::cpu::elman_layer_forward_cpu>::call);
  m.impl("elman_layer_backward", &rnnfast::Widened<&rnnfast::cpu::elman_layer_backward_cpu>::call);
}
