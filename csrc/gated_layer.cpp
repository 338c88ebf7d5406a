#include "gated_layer.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <vector>

namespace rnnfast {
namespace {

at::Tensor contiguous_or_undefined(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

// A weight's gradient, the sum over all T*B rows of a_r^T b_r, per direction: a (T*B, D, M), b (T*B, D, N)
// -> (D, M, N), as one batched product.
at::Tensor weight_gradient(const at::Tensor& a, const at::Tensor& b) {
  return at::bmm(a.permute({1, 2, 0}), b.transpose(0, 1));
}

struct ForwardResult {
  at::Tensor output, h_n, c_n, workspace;
};

// One layer of any cell: the input projection of every step and direction as one product (the parallel part),
// then the backend's loop over time.
ForwardResult gated_forward(const CellSpec& cell, GatedForwardRecurrence recurrence, const at::Tensor& input,
                            const at::Tensor& hx, const c10::optional<at::Tensor>& cx, const at::Tensor& weight_ih,
                            const at::Tensor& weight_hh, const c10::optional<at::Tensor>& bias_x,
                            const c10::optional<at::Tensor>& bias_h, const c10::optional<at::Tensor>& weight_hr,
                            const c10::optional<at::Tensor>& batch_sizes, bool save_workspace) {
  // The products below are in the op's own dtype even inside an autocast region (csrc/autocast.cpp).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const GatedSizes s =
      check_gated_forward_args(cell, input, hx, cx, weight_ih, weight_hh, bias_x, bias_h, weight_hr, batch_sizes);
  at::Tensor bs_holder;
  const int64_t* bs = host_batch_sizes(batch_sizes, bs_holder);
  const int64_t GH = s.G * s.H;

  GatedForwardBuffers buffers;
  buffers.input = input.contiguous().view({s.T * s.B, s.I});
  buffers.weight_ih = weight_ih.contiguous().view({s.D * GH, s.I});
  if (bias_x.has_value()) buffers.bias_x = bias_x->contiguous().view({s.D * GH});
  buffers.bias_h = contiguous_or_undefined(bias_h);
  buffers.weight_hh = weight_hh.contiguous();
  buffers.weight_hr = contiguous_or_undefined(weight_hr);
  buffers.output = at::empty({s.T, s.B, s.D * s.P}, input.options());
  buffers.h = hx.clone(at::MemoryFormat::Contiguous);
  if (cx.has_value()) buffers.c = cx->clone(at::MemoryFormat::Contiguous);
  // Unsaved, the workspace shrinks to one step's scratch: at T = 1024, B = 32, H = 64 the whole one is 50 MB,
  // and the page faults of a fresh buffer that size cost the LSTM forward more than its arithmetic.
  buffers.workspace = at::empty({save_workspace ? s.T : 1, s.B, s.D * s.W * s.H}, input.options());
  if (s.T > 0) recurrence(buffers, s, bs);
  return {buffers.output, buffers.h, buffers.c, save_workspace ? buffers.workspace : at::empty({0}, input.options())};
}

struct BackwardResult {
  at::Tensor grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias_x, grad_bias_h;
  at::Tensor grad_h_seq;  // (T, B, D*P): the total dL/dh_t, for the LSTM projection's weight gradient
};

// Backpropagation through time: the backend's loop carries the state gradients; every weight, bias and input
// gradient is a whole-sequence product after it.
BackwardResult gated_backward(const CellSpec& cell, GatedBackwardRecurrence recurrence,
                              const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                              const c10::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                              const at::Tensor& hx, const c10::optional<at::Tensor>& cx, const at::Tensor& weight_ih,
                              const at::Tensor& weight_hh, const c10::optional<at::Tensor>& weight_hr,
                              const at::Tensor& output, const at::Tensor& workspace,
                              const c10::optional<at::Tensor>& batch_sizes, TemporaryBuffer temporary) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const GatedSizes s = check_gated_forward_args(cell, input, hx, cx, weight_ih, weight_hh, c10::nullopt,
                                                c10::nullopt, weight_hr, batch_sizes);
  check_gated_backward_args(cell, s, input, grad_output, grad_h_n, grad_c_n, output, workspace);
  at::Tensor bs_holder;
  const int64_t* bs = host_batch_sizes(batch_sizes, bs_holder);
  const int64_t GH = s.G * s.H, TB = s.T * s.B;

  GatedBackwardBuffers buffers;
  buffers.grad_h_seq = grad_output.clone(at::MemoryFormat::Contiguous);
  // (K, T, B, D*G*H): dL/dgates, and for a cell that keeps it apart (K = 2) the recurrent product's, as one
  // temporary (a backend's may be one buffer per thread)
  const std::vector<int64_t> gates_sizes{cell.separate_recurrent_gradient ? 2 : 1, s.T, s.B, s.D * GH};
  const at::Tensor grad_gates =
      temporary ? temporary(gates_sizes, input.options()) : at::empty(gates_sizes, input.options());
  buffers.grad_gates_x = grad_gates[0];
  if (cell.separate_recurrent_gradient) buffers.grad_gates_h = grad_gates[1];
  buffers.grad_h = grad_h_n.clone(at::MemoryFormat::Contiguous);
  if (grad_c_n.has_value()) buffers.grad_c = grad_c_n->clone(at::MemoryFormat::Contiguous);
  buffers.prev_h = previous_states(output.contiguous(), hx.contiguous(), s.D, s.P, bs);
  buffers.workspace = workspace.contiguous();
  buffers.weight_hh = weight_hh.contiguous();
  buffers.weight_hr = contiguous_or_undefined(weight_hr);
  if (s.T > 0) recurrence(buffers, s, bs);

  const at::Tensor x = input.contiguous().view({TB, s.I});              // (T*B, I)
  const at::Tensor w_ih = weight_ih.contiguous().view({s.D * GH, s.I});  // (D*G*H, I)
  const at::Tensor dgx = buffers.grad_gates_x.view({TB, s.D * GH});      // (T*B, D*G*H)
  const at::Tensor dgh =
      (cell.separate_recurrent_gradient ? buffers.grad_gates_h : buffers.grad_gates_x).view({TB, s.D, GH});
  BackwardResult r;
  r.grad_input = at::mm(dgx, w_ih).view({s.T, s.B, s.I});
  r.grad_hx = buffers.grad_h;
  r.grad_cx = buffers.grad_c;
  r.grad_weight_ih = at::mm(dgx.t(), x).view({s.D, GH, s.I});
  r.grad_weight_hh = weight_gradient(dgh, buffers.prev_h.view({TB, s.D, s.P}));  // (D, G*H, P)
  r.grad_bias_x = dgx.sum(0).view({s.D, GH});
  if (cell.separate_recurrent_gradient) r.grad_bias_h = dgh.sum(0);
  r.grad_h_seq = buffers.grad_h_seq;
  return r;
}

}  // namespace

at::Tensor whole_input_projection(const GatedForwardBuffers& buffers, const GatedSizes& s) {
  at::Tensor gates_x = at::empty({s.T * s.B, s.D * s.G * s.H}, buffers.input.options());  // (T*B, D*G*H)
  project_input(gates_x, buffers.input, buffers.weight_ih, buffers.bias_x);
  return gates_x.view({s.T, s.B, s.D * s.G * s.H});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_with(
    GatedForwardRecurrence recurrence, const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& weight_hr, const c10::optional<at::Tensor>& batch_sizes, bool save_workspace) {
  // b_ih + b_hh arrives summed: the LSTM adds both before every nonlinearity.
  ForwardResult r = gated_forward(LstmCell::spec, recurrence, input, hx, cx, weight_ih, weight_hh, bias,
                                  c10::nullopt, weight_hr, batch_sizes, save_workspace);
  return {r.output, r.h_n, r.c_n, r.workspace};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward_with(GatedBackwardRecurrence recurrence, const at::Tensor& grad_output,
                         const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& input,
                         const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& weight_ih,
                         const at::Tensor& weight_hh, const c10::optional<at::Tensor>& weight_hr,
                         const at::Tensor& output, const at::Tensor& workspace,
                         const c10::optional<at::Tensor>& batch_sizes, TemporaryBuffer temporary) {
  BackwardResult r = gated_backward(LstmCell::spec, recurrence, grad_output, grad_h_n, grad_c_n, input, hx, cx,
                                    weight_ih, weight_hh, weight_hr, output, workspace, batch_sizes, temporary);
  // Without a projection there is no weight_hr, and its gradient is an empty tensor.
  at::Tensor grad_weight_hr = at::empty({0}, input.options());
  if (weight_hr.has_value()) {
    const int64_t TB = input.size(0) * input.size(1), D = weight_hr->size(0), P = weight_hr->size(1);
    const int64_t H = weight_hr->size(2);
    // m_t = o_t tanh(c_t), the projection's input, from the saved gates: (T*B, D, H).
    const at::Tensor saved = workspace.contiguous().view({TB, D, LstmCell::kSavedCount, H});
    const at::Tensor m = saved.select(2, LstmCell::kSavedO) * saved.select(2, LstmCell::kSavedTanhCell);
    grad_weight_hr = weight_gradient(r.grad_h_seq.view({TB, D, P}), m);  // (D, P, H)
  }
  return {r.grad_input, r.grad_hx, r.grad_cx, r.grad_weight_ih, r.grad_weight_hh, r.grad_bias_x, grad_weight_hr};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_forward_with(
    GatedForwardRecurrence recurrence, const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const c10::optional<at::Tensor>& bias_ih, const c10::optional<at::Tensor>& bias_hh,
    const c10::optional<at::Tensor>& batch_sizes, bool save_workspace) {
  TORCH_CHECK(bias_ih.has_value() == bias_hh.has_value(),
              "rnnfast: expected both bias_ih and bias_hh, or neither, for the GRU cell");
  // The cell adds b_hh itself (its n part sits inside r * (...)), so it always gets one, zero without a bias.
  c10::optional<at::Tensor> recurrent_bias = bias_hh;
  if (!bias_hh.has_value() && weight_ih.dim() == 3) {
    recurrent_bias = at::zeros({weight_ih.size(0), weight_ih.size(1)}, weight_ih.options());
  }
  ForwardResult r = gated_forward(GruCell::spec, recurrence, input, hx, c10::nullopt, weight_ih, weight_hh, bias_ih,
                                  recurrent_bias, c10::nullopt, batch_sizes, save_workspace);
  return {r.output, r.h_n, r.workspace};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward_with(
    GatedBackwardRecurrence recurrence, const at::Tensor& grad_output, const at::Tensor& grad_h_n,
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const at::Tensor& output, const at::Tensor& workspace, const c10::optional<at::Tensor>& batch_sizes,
    TemporaryBuffer temporary) {
  BackwardResult r = gated_backward(GruCell::spec, recurrence, grad_output, grad_h_n, c10::nullopt, input, hx,
                                    c10::nullopt, weight_ih, weight_hh, c10::nullopt, output, workspace, batch_sizes,
                                    temporary);
  return {r.grad_input, r.grad_hx, r.grad_weight_ih, r.grad_weight_hh, r.grad_bias_x, r.grad_bias_h};
}

}  // namespace rnnfast
