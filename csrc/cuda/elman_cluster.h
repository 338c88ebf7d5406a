// The cluster plan of the Elman recurrence's persistent path (elman_cluster_kernels.cuh): W_hh in registers, a
// direction's units over the blocks of one thread-block cluster (sm_90) that exchange each step's state through
// distributed shared memory. Not verified on a GPU yet (tests/test_cuda_emulation.py runs its source on the
// CPU): it runs only under RNNFAST_CUDA_PATH=cluster (path_setting.h).
#pragma once

#include <ATen/core/Tensor.h>

#include "../elman_args.h"

namespace rnnfast {
namespace cuda {

// Whether the cluster kernels can run this layer on the current device: an sm_90 GPU, float32, no packed
// sequence, at least one step, hidden size within what a cluster of up to 8 blocks holds in registers (256).
bool cluster_supported(const ElmanSizes& s, at::ScalarType dtype, bool packed);

// The same contracts as ForwardRecurrence / BackwardRecurrence (elman_layer.h), without batch_sizes.
void cluster_forward_recurrence(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                                at::Tensor& h_n, const ElmanSizes& s, bool relu);
void cluster_backward_recurrence(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                                 const at::Tensor& weight_hh, const ElmanSizes& s, bool relu);

}  // namespace cuda
}  // namespace rnnfast
