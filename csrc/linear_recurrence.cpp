#include "linear_recurrence.h"

#include <ATen/ATen.h>

#include "elman_args.h"

namespace rnnfast {
namespace {

// Sizes of a recurrence: T steps, B batch rows, H channels per row.
struct ScanSizes {
  int64_t T, B, H;
};

// b (T, B, H), named b_name in messages (grad_h in the backward), fixes the sizes; the coefficient is
// a (T, B, H) when dense is false, else A (T, B, H, H).
ScanSizes check_scan_args(const at::Tensor& coef, const at::Tensor& b, const at::Tensor& h0, bool dense,
                          const char* b_name) {
  const char* coef_name = dense ? "A" : "a";
  TORCH_CHECK(b.dim() == 3, "rnnfast: expected ", b_name, " of shape (T, B, H), got ", b.dim(), "-D ", b_name,
              " of shape ", b.sizes());
  TORCH_CHECK(at::isFloatingType(b.scalar_type()), "rnnfast: expected a floating-point ", b_name, ", got ",
              b.scalar_type());
  const ScanSizes s{b.size(0), b.size(1), b.size(2)};
  if (dense) {
    check_shape(coef, {s.T, s.B, s.H, s.H}, coef_name);
  } else {
    check_shape(coef, {s.T, s.B, s.H}, coef_name);
  }
  check_shape(h0, {s.B, s.H}, "h0");
  check_same_device_dtype(coef, b, coef_name);
  check_same_device_dtype(h0, b, "h0");
  return s;
}

// The state each step started from: h0 for t = 0, else h_{t-1}. (T, B, H)
at::Tensor previous_states(const at::Tensor& h, const at::Tensor& h0) {
  return at::cat({h0.unsqueeze(0), h.narrow(0, 0, h.size(0) - 1)}, 0);
}

// g (T, B, H): the adjoint scan of grad_h, from zero.
at::Tensor adjoint_scan(ScanFn scan, const at::Tensor& coef, const at::Tensor& grad_h, const ScanSizes& s) {
  at::Tensor g = at::empty({s.T, s.B, s.H}, grad_h.options());  // (T, B, H)
  if (s.T > 0 && s.B > 0 && s.H > 0) {
    scan(coef.contiguous(), grad_h.contiguous(), at::zeros({s.B, s.H}, grad_h.options()), g, true);
  }
  return g;
}

}  // namespace

at::Tensor linear_recurrence_with(ScanFn scan, const at::Tensor& coef, const at::Tensor& b, const at::Tensor& h0,
                                  bool dense) {
  const ScanSizes s = check_scan_args(coef, b, h0, dense, "b");
  at::Tensor out = at::empty({s.T, s.B, s.H}, b.options());  // (T, B, H)
  if (s.T > 0 && s.B > 0 && s.H > 0) scan(coef.contiguous(), b.contiguous(), h0.contiguous(), out, false);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_recurrence_backward_with(ScanFn scan, const at::Tensor& grad_h,
                                                                               const at::Tensor& coef,
                                                                               const at::Tensor& h,
                                                                               const at::Tensor& h0, bool dense) {
  const ScanSizes s = check_scan_args(coef, grad_h, h0, dense, "grad_h");
  check_shape(h, grad_h.sizes(), "h");
  check_same_device_dtype(h, grad_h, "h");
  if (s.T == 0) return {at::zeros_like(coef), at::zeros_like(grad_h), at::zeros_like(h0)};
  at::Tensor grad_b = adjoint_scan(scan, coef, grad_h, s);  // (T, B, H)
  const at::Tensor prev = previous_states(h, h0);           // (T, B, H)
  if (!dense) return {grad_b * prev, grad_b, coef[0] * grad_b[0]};
  // The outer products g_t h_{t-1}^T of every step at once, (T, B, H, H), and A_0^T g_0 for every row, (B, H).
  at::Tensor grad_A = grad_b.unsqueeze(3) * prev.unsqueeze(2);
  at::Tensor grad_h0 = at::matmul(coef[0].transpose(1, 2), grad_b[0].unsqueeze(2)).squeeze(2);
  return {grad_A, grad_b, grad_h0};
}

}  // namespace rnnfast
