#include "elman_layer.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

namespace rnnfast {
namespace {

const int64_t* host_batch_sizes(const c10::optional<at::Tensor>& batch_sizes, at::Tensor& holder) {
  if (!batch_sizes.has_value()) return nullptr;
  holder = batch_sizes->contiguous();
  return holder.data_ptr<int64_t>();
}

// The state each step started from, laid out like output (T, B, D*H): the previous step's output, or hx for a
// row's first step. dL/dW_hh is then one product over all steps. Rows past a row's length are left as they
// fall: their dL/dz is zero.
at::Tensor previous_hidden_states(const at::Tensor& output, const at::Tensor& hx, const ElmanSizes& s,
                                  const int64_t* batch_sizes) {
  using at::indexing::Slice;
  at::Tensor prev = at::empty_like(output);  // (T, B, D*H)
  if (s.T == 0) return prev;
  for (int64_t d = 0; d < s.D; ++d) {
    const auto cols = Slice(d * s.H, (d + 1) * s.H);
    if (d == 0) {
      prev.index_put_({Slice(1, s.T), Slice(), cols}, output.index({Slice(0, s.T - 1), Slice(), cols}));
      prev.index_put_({0, Slice(), cols}, hx[d]);
      continue;
    }
    prev.index_put_({Slice(0, s.T - 1), Slice(), cols}, output.index({Slice(1, s.T), Slice(), cols}));
    prev.index_put_({s.T - 1, Slice(), cols}, hx[d]);
    if (batch_sizes == nullptr) continue;
    // Running backwards, a shorter row starts at its own last step, from hx, while longer rows carry on.
    for (int64_t t = 0; t + 1 < s.T; ++t) {
      const int64_t started = batch_sizes[t + 1], running = batch_sizes[t];
      if (started < running) {
        prev.index_put_({t, Slice(started, running), cols}, hx.index({d, Slice(started, running)}));
      }
    }
  }
  return prev;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> elman_layer_forward_with(ForwardRecurrence recurrence, const at::Tensor& input,
                                                            const at::Tensor& hx, const at::Tensor& weight_ih,
                                                            const at::Tensor& weight_hh,
                                                            const c10::optional<at::Tensor>& bias,
                                                            const c10::optional<at::Tensor>& batch_sizes,
                                                            bool relu) {
  // The products below are in the op's own dtype even when called inside an autocast region (csrc/autocast.cpp
  // has already cast the arguments, or the caller chose the dtype); autocast would otherwise narrow them.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const ElmanSizes s = check_elman_forward_args(input, hx, weight_ih, weight_hh, bias, batch_sizes);
  at::Tensor bs_holder;
  const int64_t* bs = host_batch_sizes(batch_sizes, bs_holder);

  const at::Tensor x = input.contiguous().view({s.T * s.B, s.I});            // (T*B, I)
  const at::Tensor w_ih = weight_ih.contiguous().view({s.D * s.H, s.I});     // (D*H, I)
  // The parallel part: every step's input projection, both directions, in one product. (T*B, D*H)
  at::Tensor output = bias.has_value() ? at::addmm(bias->contiguous().view({s.D * s.H}), x, w_ih.t())
                                       : at::mm(x, w_ih.t());
  output = output.view({s.T, s.B, s.D * s.H});
  at::Tensor h_n = at::empty({s.D, s.B, s.H}, input.options());  // (D, B, H)
  if (s.T == 0) {
    h_n.copy_(hx);
    return {output, h_n};
  }
  recurrence(output, hx.contiguous(), weight_hh.contiguous(), h_n, s, bs, relu);
  return {output, h_n};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> elman_layer_backward_with(
    BackwardRecurrence recurrence, const at::Tensor& grad_output, const at::Tensor& grad_h_n,
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const at::Tensor& output, const c10::optional<at::Tensor>& batch_sizes, bool relu) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const ElmanSizes s =
      check_elman_backward_args(grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, batch_sizes);
  at::Tensor bs_holder;
  const int64_t* bs = host_batch_sizes(batch_sizes, bs_holder);

  at::Tensor grad_z = grad_output.clone(at::MemoryFormat::Contiguous);  // (T, B, D*H), becomes dL/dz
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
  const at::Tensor prev = previous_hidden_states(out, hx.contiguous(), s, bs);
  // (D, H, T*B) @ (D, T*B, H) -> (D, H, H)
  at::Tensor grad_weight_hh = at::bmm(dz.view({s.T * s.B, s.D, s.H}).permute({1, 2, 0}),
                                      prev.view({s.T * s.B, s.D, s.H}).transpose(0, 1));
  return {grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias};
}

}  // namespace rnnfast
