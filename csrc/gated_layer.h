// The device-independent half of a gated layer (LSTM, GRU): the whole-sequence matrix products before and after
// the loop over time, around a backend's recurrence, which runs a cell description of gate_math.h. A backend
// supplies one forward and one backward recurrence per cell and registers the ops through the templates at the
// end of this file; everything else is shared.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "gate_math.h"
#include "gated_args.h"
#include "layer_states.h"

namespace rnnfast {

// What a forward recurrence reads and writes. Contiguous, on the input's device and dtype.
struct GatedForwardBuffers {
  // The input projection's operands: a backend computes gates_x = x_t W_ih^T + bias_x from them, for the whole
  // sequence at once (whole_input_projection) or a block of steps at a time.
  at::Tensor input;      // (T*B, I)
  at::Tensor weight_ih;  // (D*G*H, I)
  at::Tensor bias_x;     // (D*G*H): the biases the cell sums up front, or undefined
  at::Tensor bias_h;     // (D, G*H): the recurrent bias the cell applies itself, or undefined (see CellSpec)
  at::Tensor weight_hh;  // (D, G*H, P)
  at::Tensor weight_hr;  // (D, P, H): the LSTM's projection, or undefined
  at::Tensor output;     // (T, B, D*P): written, h_t, zeros past a row's length
  at::Tensor h;          // (D, B, P): hx on entry, each row's last h on return
  at::Tensor c;          // (D, B, H): cx on entry, each row's last c on return; undefined without a cell state
  // (T, B, D*W*H): written, the cell's saved quantities, zeros past a row's length. Or, when nothing will read
  // them (inference), (1, B, D*W*H): scratch that every step overwrites (workspace_step_stride).
  at::Tensor workspace;
};

// How far apart two steps' slices of the forward's workspace are: 0 in the one-step scratch of inference.
inline int64_t workspace_step_stride(const GatedForwardBuffers& buffers, const GatedSizes& s) {
  return buffers.workspace.size(0) == s.T ? s.B * s.D * s.W * s.H : 0;
}

// gates_x of every step and direction, (T, B, D*G*H), as one product: for backends that project the whole
// sequence before the loop.
at::Tensor whole_input_projection(const GatedForwardBuffers& buffers, const GatedSizes& sizes);

// Runs the loop over time of every direction. batch_sizes is a host array of T counts, or nullptr when all B
// rows run all T steps.
using GatedForwardRecurrence = void (*)(GatedForwardBuffers& buffers, const GatedSizes& sizes,
                                        const int64_t* batch_sizes);

// What a backward recurrence reads and writes. Contiguous, on the input's device and dtype.
struct GatedBackwardBuffers {
  at::Tensor grad_h_seq;    // (T, B, D*P): dL/dh_t from the output on entry, the total dL/dh_t on return
  at::Tensor grad_gates_x;  // (T, B, D*G*H): written, dL/d(gates_x), zeros past a row's length
  at::Tensor grad_gates_h;  // (T, B, D*G*H): written, dL/d(h_{t-1} W_hh^T), or undefined where it equals the above
  at::Tensor grad_h;        // (D, B, P): dL/dh_n on entry, dL/dh_0 on return
  at::Tensor grad_c;        // (D, B, H): dL/dc_n on entry, dL/dc_0 on return; undefined without a cell state
  at::Tensor prev_h;        // (T, B, D*P): the h each step started from (previous_states)
  at::Tensor workspace;     // (T, B, D*W*H): the forward's
  at::Tensor weight_hh;     // (D, G*H, P)
  at::Tensor weight_hr;     // (D, P, H), or undefined
};

using GatedBackwardRecurrence = void (*)(GatedBackwardBuffers& buffers, const GatedSizes& sizes,
                                         const int64_t* batch_sizes);

// The ops, given a backend's recurrences for the cell. Schemas and shapes in csrc/ops.cpp.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_with(
    GatedForwardRecurrence recurrence, const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& weight_hr, const c10::optional<at::Tensor>& batch_sizes, bool save_workspace);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward_with(GatedBackwardRecurrence recurrence, const at::Tensor& grad_output,
                         const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& input,
                         const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& weight_ih,
                         const at::Tensor& weight_hh, const c10::optional<at::Tensor>& weight_hr,
                         const at::Tensor& output, const at::Tensor& workspace,
                         const c10::optional<at::Tensor>& batch_sizes, TemporaryBuffer temporary = nullptr);

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_forward_with(
    GatedForwardRecurrence recurrence, const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const c10::optional<at::Tensor>& bias_ih, const c10::optional<at::Tensor>& bias_hh,
    const c10::optional<at::Tensor>& batch_sizes, bool save_workspace);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward_with(
    GatedBackwardRecurrence recurrence, const at::Tensor& grad_output, const at::Tensor& grad_h_n,
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const at::Tensor& output, const at::Tensor& workspace, const c10::optional<at::Tensor>& batch_sizes,
    TemporaryBuffer temporary = nullptr);

// A backend's op implementations are these, instantiated with its recurrences (and for the backward, optionally
// its TemporaryBuffer for dL/dgates), e.g.
//   m.impl("lstm_layer_forward", &lstm_layer_forward_op<my_forward<LstmCell>>);
template <GatedForwardRecurrence R>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_op(
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& weight_hr,
    const c10::optional<at::Tensor>& batch_sizes, bool save_workspace) {
  return lstm_layer_forward_with(R, input, hx, cx, weight_ih, weight_hh, bias, weight_hr, batch_sizes, save_workspace);
}

template <GatedBackwardRecurrence R, TemporaryBuffer Temporary = nullptr>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_backward_op(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& input,
    const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const c10::optional<at::Tensor>& weight_hr, const at::Tensor& output, const at::Tensor& workspace,
    const c10::optional<at::Tensor>& batch_sizes) {
  return lstm_layer_backward_with(R, grad_output, grad_h_n, grad_c_n, input, hx, cx, weight_ih, weight_hh, weight_hr,
                                  output, workspace, batch_sizes, Temporary);
}

template <GatedForwardRecurrence R>
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_forward_op(
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const c10::optional<at::Tensor>& bias_ih, const c10::optional<at::Tensor>& bias_hh,
    const c10::optional<at::Tensor>& batch_sizes, bool save_workspace) {
  return gru_layer_forward_with(R, input, hx, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes, save_workspace);
}

template <GatedBackwardRecurrence R, TemporaryBuffer Temporary = nullptr>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward_op(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& output, const at::Tensor& workspace,
    const c10::optional<at::Tensor>& batch_sizes) {
  return gru_layer_backward_with(R, grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, workspace,
                                 batch_sizes, Temporary);
}

}  // namespace rnnfast
