// The fused-step CUDA path of the Elman recurrence (elman_fused_step_kernels.cuh): one launch per time step for
// both directions, the recurrent product and the step's pointwise work in the same kernel. Any dtype, packed
// sequences included. Opt-in under RNNFAST_CUDA_PATH=fused until a GPU check has verified and timed it.
#pragma once

#include <ATen/core/Tensor.h>

#include "../elman_args.h"

namespace rnnfast {
namespace cuda {

// Whether the fused-step kernels can run this layer (their sizes are ints).
bool fused_step_supported(const ElmanSizes& s);

// The contracts of ForwardRecurrence / BackwardRecurrence (elman_layer.h).
void fused_step_forward_recurrence(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                                   at::Tensor& h_n, const ElmanSizes& s, const int64_t* batch_sizes, bool relu);
void fused_step_backward_recurrence(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                                    const at::Tensor& weight_hh, const ElmanSizes& s, const int64_t* batch_sizes,
                                    bool relu);

}  // namespace cuda
}  // namespace rnnfast
