#include "elman_layer.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

namespace rnnfast {

std::tuple<at::Tensor, at::Tensor> elman_layer_forward_with(ForwardRecurrence recurrence, const at::Tensor& input,
                                                            const at::Tensor& hx, const at::Tensor& weight_ih,
                                                            const at::Tensor& weight_hh,
                                                            const c10::optional<at::Tensor>& bias,
                                                            const c10::optional<at::Tensor>& batch_sizes, bool relu,
                                                            InputProjection project, bool recurrence_adds_bias) {
  // The products below are in the op's own dtype even when called inside an autocast region (csrc/autocast.cpp
  // has already cast the arguments, or the caller chose the dtype); autocast would otherwise narrow them.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const ElmanSizes s = check_elman_forward_args(input, hx, weight_ih, weight_hh, bias, batch_sizes);
  at::Tensor bs_holder;
  const int64_t* bs = host_batch_sizes(batch_sizes, bs_holder);

  const at::Tensor x = input.contiguous();                      // (T, B, I)
  const at::Tensor w_ih = weight_ih.contiguous();               // (D, H, I)
  const c10::optional<at::Tensor> b = bias.has_value() ? c10::optional<at::Tensor>(bias->contiguous()) : bias;
  // (D*H): the bias the recurrence adds, or undefined where the projection adds it
  const at::Tensor recurrence_bias = recurrence_adds_bias && b.has_value() ? b->view({s.D * s.H}) : at::Tensor();
  const c10::optional<at::Tensor> projection_bias = recurrence_bias.defined() ? c10::nullopt : b;
  // The parallel part: every step's input projection, both directions at once. (T, B, D*H)
  at::Tensor output = at::empty({s.T, s.B, s.D * s.H}, input.options());
  if (project == nullptr || !project(output, x, w_ih, projection_bias, s)) {
    at::Tensor output_rows = output.view({s.T * s.B, s.D * s.H});  // (T*B, D*H), the product's layout
    project_input(output_rows, x.view({s.T * s.B, s.I}), w_ih.view({s.D * s.H, s.I}),
                  projection_bias.has_value() ? projection_bias->view({s.D * s.H}) : at::Tensor());
  }
  at::Tensor h_n = at::empty({s.D, s.B, s.H}, input.options());  // (D, B, H)
  if (s.T == 0) {
    h_n.copy_(hx);
    return {output, h_n};
  }
  recurrence(output, hx.contiguous(), weight_hh.contiguous(), recurrence_bias, h_n, s, bs, relu);
  return {output, h_n};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> elman_layer_backward_with(
    BackwardRecurrence recurrence, const at::Tensor& grad_output, const at::Tensor& grad_h_n,
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const at::Tensor& output, const c10::optional<at::Tensor>& batch_sizes, bool relu, TemporaryBuffer temporary) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const ElmanSizes s =
      check_elman_backward_args(grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, batch_sizes);
  at::Tensor bs_holder;
  const int64_t* bs = host_batch_sizes(batch_sizes, bs_holder);

  // (T, B, D*H): dL/dh_t from the output, becomes dL/dz
  at::Tensor grad_z = temporary ? temporary(grad_output.sizes(), grad_output.options())
                                : at::empty(grad_output.sizes(), grad_output.options());
  grad_z.copy_(grad_output);
  at::Tensor grad_hx = grad_h_n.clone(at::MemoryFormat::Contiguous);    // (D, B, H), becomes dL/dh_0
  const at::Tensor out = output.contiguous();
  if (s.T > 0) recurrence(grad_z, grad_hx, out, weight_hh.contiguous(), s, bs, relu);

  // The parallel part: every whole-sequence product after the loop.
  const at::Tensor x = input.contiguous().view({s.T * s.B, s.I});         // (T*B, I)
  const at::Tensor w_ih = weight_ih.contiguous().view({s.D * s.H, s.I});  // (D*H, I)
  const at::Tensor dz = grad_z.view({s.T * s.B, s.D * s.H});             // (T*B, D*H)
  at::Tensor grad_input = at::mm(dz, w_ih).view({s.T, s.B, s.I});
  at::Tensor grad_weight_ih = at::mm(dz.t(), x).view({s.D, s.H, s.I});
  at::Tensor grad_bias = dz.sum(0).view({s.D, s.H});
  at::Tensor grad_weight_hh = recurrent_weight_gradient(grad_z, out, hx.contiguous(), s.D, s.H, s.H, bs);
  return {grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias};
}

}  // namespace rnnfast
