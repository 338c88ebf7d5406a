// The persistent CUDA path of the gated layers (LSTM, GRU): one launch for the whole sequence, each block keeping
// the W_hh rows of all gates of its hidden units in shared memory for all steps. A block owns every gate of its
// units, so the cell's pointwise step (gate_math.h) runs where the gates were computed; only h_t leaves the
// block, through global memory, to the blocks of the same direction, which meet at a grid-wide barrier each step.
// Not verified on a GPU yet (tests/test_cuda_emulation.py runs the kernels' source on the CPU): it runs only under
// RNNFAST_CUDA_PATH=persistent (path_setting.h).
#pragma once

#include <ATen/core/Tensor.h>

#include "../gated_layer.h"

namespace rnnfast {
namespace cuda {

// Whether the persistent kernels can run this layer of Cell on the current device: float32 (16-bit layers reach
// the loops widened, csrc/widened.h; float64 takes the general path), no packed sequence, no LSTM projection,
// at least one step, and every block resident at once with its shared memory within the device's limit.
template <typename Cell>
bool gated_persistent_supported(const GatedSizes& s, at::ScalarType dtype, bool packed);

// The same contracts as GatedForwardRecurrence / GatedBackwardRecurrence (gated_layer.h), without batch_sizes.
template <typename Cell>
void gated_persistent_forward(GatedForwardBuffers& buffers, const GatedSizes& s);
template <typename Cell>
void gated_persistent_backward(GatedBackwardBuffers& buffers, const GatedSizes& s);

}  // namespace cuda
}  // namespace rnnfast
