// The persistent CUDA path of the Elman recurrence: one launch for the whole sequence, each block keeping its
// share of W_hh in shared memory for all steps, so the loop over time costs no kernel launches and W_hh is read
// from global memory once. Where W_hh fits one block, each block runs a whole direction for a couple of batch
// rows on its own; else a direction's hidden units are split over blocks that meet at a grid-wide barrier
// (a cooperative launch) every step.
#pragma once

#include <ATen/core/Tensor.h>

#include "../elman_args.h"

namespace rnnfast {
namespace cuda {

// Whether the persistent kernels can run this layer on the current device: every block resident at once,
// its shared memory within the device's limit, a dtype with float32 accumulation, no packed sequence.
bool persistent_supported(const ElmanSizes& s, at::ScalarType dtype, bool packed);

// Whether this layer's persistent plan splits a direction over blocks with a grid-wide barrier per step.
bool persistent_needs_grid_sync(const ElmanSizes& s);

// The same contracts as ForwardRecurrence / BackwardRecurrence (elman_layer.h), without batch_sizes.
void persistent_forward_recurrence(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                                   at::Tensor& h_n, const ElmanSizes& s, bool relu);
void persistent_backward_recurrence(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                                    const at::Tensor& weight_hh, const ElmanSizes& s, bool relu);

}  // namespace cuda
}  // namespace rnnfast
