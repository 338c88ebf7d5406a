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
  using at::indexing::Slice;
  const int64_t T = output.size(0);
  at::Tensor prev = at::empty_like(output);  // (T, B, D*width)
  if (T == 0) return prev;
  for (int64_t d = 0; d < D; ++d) {
    const auto cols = Slice(d * width, (d + 1) * width);
    if (d == 0) {
      prev.index_put_({Slice(1, T), Slice(), cols}, output.index({Slice(0, T - 1), Slice(), cols}));
      prev.index_put_({0, Slice(), cols}, hx[d]);
      continue;
    }
    prev.index_put_({Slice(0, T - 1), Slice(), cols}, output.index({Slice(1, T), Slice(), cols}));
    prev.index_put_({T - 1, Slice(), cols}, hx[d]);
    if (batch_sizes == nullptr) continue;
    // Running backwards, a shorter row starts at its own last step, from hx, while longer rows carry on.
    for (int64_t t = 0; t + 1 < T; ++t) {
      const int64_t started = batch_sizes[t + 1], running = batch_sizes[t];
      if (started < running) {
        prev.index_put_({t, Slice(started, running), cols}, hx.index({d, Slice(started, running)}));
      }
    }
  }
  return prev;
}

}  // namespace rnnfast
