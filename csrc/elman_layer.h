// The device-independent half of an Elman layer: the whole-sequence matrix products before and after the loop
// over time (the parallel part), around a backend's recurrence (the sequential part).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "elman_args.h"
#include "layer_states.h"

namespace rnnfast {

// Runs the loop over time in place. On entry output (T, B, D*H) holds x_t W_ih^T + b for every step, or x_t W_ih^T
// alone where bias (D*H) is defined: a backend that asks for it (recurrence_adds_bias below) adds b to each
// step's pre-activation itself, which spares a pass writing b into every row of the output. On return output holds
// h_t, with zeros at the steps past a row's length. h_n (D, B, H) receives each row's last state. batch_sizes is a
// host array of T counts, or nullptr when all B rows run all T steps.
using ForwardRecurrence = void (*)(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                                   const at::Tensor& bias, at::Tensor& h_n, const ElmanSizes& sizes,
                                   const int64_t* batch_sizes, bool relu);

// Runs backpropagation through time in place. On entry grad_z (T, B, D*H) holds dL/dh_t from the layer's
// output and grad_h (D, B, H) holds dL/dh_n; on return grad_z holds dL/dz_t (z the pre-activation, zero past a
// row's length) and grad_h holds dL/dh_0.
using BackwardRecurrence = void (*)(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                                    const at::Tensor& weight_hh, const ElmanSizes& sizes,
                                    const int64_t* batch_sizes, bool relu);

// A backend's own input projection for shapes where it beats the shared BLAS product: fills output (T, B, D*H)
// with x_t W_ih^T + b for every step and returns true, or returns false (output untouched) to leave it to the
// product. input, weight_ih and bias arrive contiguous.
using InputProjection = bool (*)(at::Tensor& output, const at::Tensor& input, const at::Tensor& weight_ih,
                                 const c10::optional<at::Tensor>& bias, const ElmanSizes& sizes);

std::tuple<at::Tensor, at::Tensor> elman_layer_forward_with(ForwardRecurrence recurrence, const at::Tensor& input,
                                                            const at::Tensor& hx, const at::Tensor& weight_ih,
                                                            const at::Tensor& weight_hh,
                                                            const c10::optional<at::Tensor>& bias,
                                                            const c10::optional<at::Tensor>& batch_sizes, bool relu,
                                                            InputProjection project = nullptr,
                                                            bool recurrence_adds_bias = false);

// temporary: the backend's buffer for dL/dz (T, B, D*H) (layer_states.h).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> elman_layer_backward_with(
    BackwardRecurrence recurrence, const at::Tensor& grad_output, const at::Tensor& grad_h_n,
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const at::Tensor& output, const c10::optional<at::Tensor>& batch_sizes, bool relu,
    TemporaryBuffer temporary = nullptr);

}  // namespace rnnfast
