// Helpers of the whole-sequence half of every layer (Elman and gated): the packed lengths as a host array and
// the state each step started from, laid out as one matrix so a recurrent weight's gradient is one product.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace rnnfast {

// Batch rows running at step t: batch_sizes[t] for a packed sequence (a host array), else all B.
inline int64_t rows_at(const int64_t* batch_sizes, int64_t t, int64_t B) { return batch_sizes ? batch_sizes[t] : B; }

// The i-th step direction d visits in the forward pass: 0..T-1, or T-1..0 for the reverse direction.
inline int64_t step_at(int64_t d, int64_t i, int64_t T) { return d == 0 ? i : T - 1 - i; }

// A backend's buffer for a backward's internal temporary (the Elman layer's dL/dz, the gated layers' dL/dgates):
// sizes and options as at::empty takes them, contents uninitialised. It never leaves the op, so a backend may
// hand out the same memory on every call; nullptr where a backend has none (at::empty).
using TemporaryBuffer = at::Tensor (*)(c10::IntArrayRef sizes, const at::TensorOptions& options);

// batch_sizes' values as a host array (kept alive by holder), or nullptr when every row runs all T steps.
const int64_t* host_batch_sizes(const c10::optional<at::Tensor>& batch_sizes, at::Tensor& holder);

// The state each step started from, laid out like output (T, B, D*width): the previous step's output, or hx
// (D, B, width) for a row's first step (for the reverse direction a shorter row starts at its own last step).
// Rows past a row's length are left as they fall: their gradients are zero.
at::Tensor previous_states(const at::Tensor& output, const at::Tensor& hx, int64_t D, int64_t width,
                           const int64_t* batch_sizes);

// The input projection of every step, as one product: out (rows, N) = x (rows, I) @ weight (N, I)^T + bias (N),
// bias undefined for none. out is written whole; all three operands are 2-D views of contiguous tensors.
void project_input(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// dL/dW_hh (D, width_out, width) = sum over steps and rows of grad_z_t^T h_{t-1}, with grad_z (T, B, D*width_out)
// and the states as previous_states lays them out. Without batch_sizes the previous states are the output itself,
// shifted one step, so the product reads them in place (two products per direction) instead of copying them.
at::Tensor recurrent_weight_gradient(const at::Tensor& grad_z, const at::Tensor& output, const at::Tensor& hx,
                                     int64_t D, int64_t width_out, int64_t width, const int64_t* batch_sizes);

}  // namespace rnnfast
