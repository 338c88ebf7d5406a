#include "layer_states.h"

#include <ATen/ATen.h>

namespace rnnfast {

const int64_t* host_batch_sizes(const c10::optional<at::Tensor>& batch_sizes, at::Tensor& holder) {
  if (!batch_sizes.has_value()) return nullptr;
  holder = batch_sizes->contiguous();
  return holder.data_ptr<int64_t>();
}

at::Tensor previous_states(const at::Tensor& output, const at::Tensor& hx, int64_t D, int64_t width,
                           const int64_t* batch_sizes) {
  const int64_t T = output.size(0);
  at::Tensor prev = at::empty_like(output);  // (T, B, D*width)
  if (T == 0) return prev;
  // Copies between narrowed views: one pass over the data, no intermediate tensor.
  for (int64_t d = 0; d < D; ++d) {
    const at::Tensor to = prev.narrow(2, d * width, width), from = output.narrow(2, d * width, width);
    if (d == 0) {
      to.narrow(0, 1, T - 1).copy_(from.narrow(0, 0, T - 1));
      to[0].copy_(hx[d]);
      continue;
    }
    to.narrow(0, 0, T - 1).copy_(from.narrow(0, 1, T - 1));
    to[T - 1].copy_(hx[d]);
    if (batch_sizes == nullptr) continue;
    // Running backwards, a shorter row starts at its own last step, from hx, while longer rows carry on.
    for (int64_t t = 0; t + 1 < T; ++t) {
      const int64_t started = batch_sizes[t + 1], running = batch_sizes[t];
      const int64_t count = running - started;
      if (count > 0) to[t].narrow(0, started, count).copy_(hx[d].narrow(0, started, count));
    }
  }
  return prev;
}

void project_input(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (bias.defined()) {
    at::addmm_out(out, bias, x, weight.t());
  } else {
    at::mm_out(out, x, weight.t());
  }
}

at::Tensor recurrent_weight_gradient(const at::Tensor& grad_z, const at::Tensor& output, const at::Tensor& hx,
                                     int64_t D, int64_t width_out, int64_t width, const int64_t* batch_sizes) {
  const int64_t T = output.size(0), B = output.size(1);
  if (batch_sizes != nullptr || T == 0) {
    // (D, width_out, T*B) @ (D, T*B, width) -> (D, width_out, width)
    const at::Tensor prev = previous_states(output, hx, D, width, batch_sizes);
    return at::bmm(grad_z.view({T * B, D, width_out}).permute({1, 2, 0}),
                   prev.view({T * B, D, width}).transpose(0, 1));
  }
  at::Tensor grad = at::empty({D, width_out, width}, grad_z.options());
  for (int64_t d = 0; d < D; ++d) {
    const at::Tensor dz = grad_z.narrow(2, d * width_out, width_out);  // (T, B, width_out)
    const at::Tensor h = output.narrow(2, d * width, width);           // (T, B, width)
    // The forward direction's step t started from h_{t-1} (step 0 from hx); the reverse direction's from h_{t+1}
    // (step T-1 from hx).
    const int64_t first = d == 0 ? 0 : T - 1;
    const at::Tensor dz_carried = dz.narrow(0, d == 0 ? 1 : 0, T - 1).reshape({(T - 1) * B, width_out});
    const at::Tensor h_carried = h.narrow(0, d == 0 ? 0 : 1, T - 1).reshape({(T - 1) * B, width});
    at::Tensor grad_d = grad.select(0, d);
    at::mm_out(grad_d, dz[first].t(), hx[d]);
    if (T > 1) grad_d.addmm_(dz_carried.t(), h_carried);
  }
  return grad;
}

}  // namespace rnnfast
