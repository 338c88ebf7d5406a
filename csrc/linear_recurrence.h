// The device-independent half of the linear-recurrence ops: argument checks, allocation and the whole-sequence
// products around a backend's scan (the part that runs over time).
//
//   diagonal: h_t = a_t * h_{t-1} + b_t       a, b, h (T, B, H), h0 (B, H)
//   dense:    h_t = A_t h_{t-1} + b_t         A (T, B, H, H), b, h (T, B, H), h0 (B, H)
//
// The backward is the adjoint recurrence, a reverse-time scan of the same form with the coefficients transposed
// and shifted one step: g_t = grad_h_t + A_{t+1}^T g_{t+1}, g_{T-1} = grad_h_{T-1}. Then grad_b = g,
// grad_A_t = g_t h_{t-1}^T (elementwise g_t * h_{t-1} for the diagonal) and grad_h0 = A_0^T g_0.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <tuple>

namespace rnnfast {

// Runs the scan into out (T, B, H). coef is a (T, B, H) or A (T, B, H, H), b (T, B, H), init (B, H), all
// contiguous and of one dtype and device. adjoint = false: out_t = coef_t * out_{t-1} + b_t from out_{-1} = init.
// adjoint = true, the backward's reverse-time form: out_t = coef_{t+1}^T out_{t+1} + b_t for t < T-1 and
// out_{T-1} = init + b_{T-1}.
using ScanFn = void (*)(const at::Tensor& coef, const at::Tensor& b, const at::Tensor& init, at::Tensor& out,
                        bool adjoint);

// The forward op: coef is a (T, B, H), or A (T, B, H, H) when dense. Returns h (T, B, H).
at::Tensor linear_recurrence_with(ScanFn scan, const at::Tensor& coef, const at::Tensor& b, const at::Tensor& h0,
                                  bool dense);

// The backward op, given the forward's h: returns grad_coef, grad_b (T, B, H) and grad_h0 (B, H).
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_recurrence_backward_with(ScanFn scan, const at::Tensor& grad_h,
                                                                               const at::Tensor& coef,
                                                                               const at::Tensor& h,
                                                                               const at::Tensor& h0, bool dense);

// One form's forward and backward op over a backend's scan, as functions the dispatcher can call.
template <ScanFn scan, bool dense>
struct LinearRecurrenceOp {
  static at::Tensor forward(const at::Tensor& coef, const at::Tensor& b, const at::Tensor& h0) {
    return linear_recurrence_with(scan, coef, b, h0, dense);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad_h, const at::Tensor& coef,
                                                                 const at::Tensor& h, const at::Tensor& h0) {
    return linear_recurrence_backward_with(scan, grad_h, coef, h, h0, dense);
  }
};

// Registers the four linear-recurrence ops of a backend, from its two scans, under the dispatch key of the
// TORCH_LIBRARY_IMPL block that calls it.
template <ScanFn diagonal_scan, ScanFn dense_scan>
void register_linear_recurrence_ops(torch::Library& m) {
  m.impl("linear_recurrence", &LinearRecurrenceOp<diagonal_scan, false>::forward);
  m.impl("linear_recurrence_backward", &LinearRecurrenceOp<diagonal_scan, false>::backward);
  m.impl("dense_linear_recurrence", &LinearRecurrenceOp<dense_scan, true>::forward);
  m.impl("dense_linear_recurrence_backward", &LinearRecurrenceOp<dense_scan, true>::backward);
}

}  // namespace rnnfast
