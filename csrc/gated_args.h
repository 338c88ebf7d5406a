// Argument checks and sizes of the gated layer ops (LSTM, GRU), shared by every backend so that a direct call
// of torch.ops.rnnfast.* with bad arguments fails with the same message on CPU and CUDA.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include "elman_args.h"
#include "gate_math.h"

namespace rnnfast {

// Sizes of one gated layer: T steps, B batch rows, I input features, H hidden units, P the width of h (the
// LSTM's proj_size, else H), D directions, G gates and W saved quantities per hidden unit.
struct GatedSizes {
  int64_t T, B, I, H, P, D, G, W;
};

inline void check_optional(const c10::optional<at::Tensor>& t, at::IntArrayRef expected, const at::Tensor& ref,
                           const char* name) {
  if (!t.has_value()) return;
  check_shape(*t, expected, name);
  check_same_device_dtype(*t, ref, name);
}

// cx is required for a cell with a cell state and must be absent otherwise; likewise weight_hr exists only for
// the LSTM's projection.
inline GatedSizes check_gated_forward_args(const CellSpec& cell, const at::Tensor& input, const at::Tensor& hx,
                                           const c10::optional<at::Tensor>& cx, const at::Tensor& weight_ih,
                                           const at::Tensor& weight_hh, const c10::optional<at::Tensor>& bias_x,
                                           const c10::optional<at::Tensor>& bias_h,
                                           const c10::optional<at::Tensor>& weight_hr,
                                           const c10::optional<at::Tensor>& batch_sizes) {
  TORCH_CHECK(input.dim() == 3, "rnnfast: expected input of shape (T, B, input_size), got ", input.dim(),
              "-D input");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), "rnnfast: expected a floating-point input, got ",
              input.scalar_type());
  const int64_t G = cell.gates;
  TORCH_CHECK(weight_ih.dim() == 3 && weight_ih.size(1) % G == 0, "rnnfast: expected weight_ih of shape (D, ", G,
              " * hidden_size, input_size) for the ", cell.name, " cell, got ", weight_ih.sizes());
  const int64_t T = input.size(0), B = input.size(1), I = input.size(2), D = weight_ih.size(0);
  const int64_t H = weight_ih.size(1) / G;
  TORCH_CHECK(D == 1 || D == 2, "rnnfast: expected 1 or 2 directions, got ", D);
  TORCH_CHECK(H > 0, "rnnfast: expected hidden_size > 0, got ", H);
  int64_t P = H;
  if (weight_hr.has_value()) {
    TORCH_CHECK(weight_hr->dim() == 3 && weight_hr->size(1) > 0,
                "rnnfast: expected weight_hr of shape (D, proj_size, hidden_size), got ", weight_hr->sizes());
    P = weight_hr->size(1);
  }
  check_shape(weight_ih, {D, G * H, I}, "weight_ih");
  check_shape(weight_hh, {D, G * H, P}, "weight_hh");
  check_shape(hx, {D, B, P}, "hx");
  check_same_device_dtype(hx, input, "hx");
  check_same_device_dtype(weight_ih, input, "weight_ih");
  check_same_device_dtype(weight_hh, input, "weight_hh");
  TORCH_CHECK(cx.has_value() == cell.has_cell_state, "rnnfast: the ", cell.name, " cell ",
              cell.has_cell_state ? "needs" : "has no", " cell state cx");
  check_optional(cx, {D, B, H}, input, "cx");
  check_optional(weight_hr, {D, P, H}, input, "weight_hr");
  check_optional(bias_x, {D, G * H}, input, cell.bias_h_apart ? "bias_ih" : "bias");
  check_optional(bias_h, {D, G * H}, input, "bias_hh");
  check_batch_sizes(batch_sizes, T, B);
  return GatedSizes{T, B, I, H, P, D, G, cell.workspace_units};
}

// The backward's extra arguments: the upstream gradients and the forward's saved output and workspace.
inline void check_gated_backward_args(const CellSpec& cell, const GatedSizes& s, const at::Tensor& input,
                                      const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                      const c10::optional<at::Tensor>& grad_c_n, const at::Tensor& output,
                                      const at::Tensor& workspace) {
  check_shape(output, {s.T, s.B, s.D * s.P}, "output");
  check_shape(workspace, {s.T, s.B, s.D * s.W * s.H}, "workspace");
  check_shape(grad_output, {s.T, s.B, s.D * s.P}, "grad_output");
  check_shape(grad_h_n, {s.D, s.B, s.P}, "grad_h_n");
  check_same_device_dtype(output, input, "output");
  check_same_device_dtype(workspace, input, "workspace");
  check_same_device_dtype(grad_output, input, "grad_output");
  check_same_device_dtype(grad_h_n, input, "grad_h_n");
  TORCH_CHECK(grad_c_n.has_value() == cell.has_cell_state, "rnnfast: the ", cell.name, " cell ",
              cell.has_cell_state ? "needs" : "has no", " grad_c_n");
  check_optional(grad_c_n, {s.D, s.B, s.H}, input, "grad_c_n");
}

}  // namespace rnnfast
