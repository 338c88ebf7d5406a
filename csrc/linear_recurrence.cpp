#include "linear_recurrence.h"

#include <ATen/ATen.h>

#include "elman_args.h"

namespace rnnfast {
namespace {

// Sizes of a recurrence: T steps, B batch rows, H channels per row.
struct ScanSizes {
  int64_t T, B, H;
};

// b (T, B, H) fixes the sizes; the coefficient is a (T, B, H) when dense is false, else A (T, B, H, H).
ScanSizes check_scan_args(const at::Tensor& coef, const at::Tensor& b, const at::Tensor& h0, bool dense) {
  const char* coef_name = dense ? "A" : "a";
  TORCH_CHECK(b.dim() == 3, "rnnfast: expected b of shape (T, B, H), got ", b.dim(), "-D b of shape ", b.sizes());
  TORCH_CHECK(at::isFloatingType(b.scalar_type()), "rnnfast: expected a floating-point b, got ", b.scalar_type());
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

void check_backward_args(const at::Tensor& grad_h, const at::Tensor& h, const at::Tensor& b_like) {
  check_shape(grad_h, b_like.sizes(), "grad_h");
  check_shape(h, b_like.sizes(), "h");
  check_same_device_dtype(grad_h, b_like, "grad_h");
  check_same_device_dtype(h, b_like, "h");
}

at::Tensor forward_with(ScanFn scan, const at::Tensor& coef, const at::Tensor& b, const at::Tensor& h0, bool dense) {
  const ScanSizes s = check_scan_args(coef, b, h0, dense);
  at::Tensor out = at::empty({s.T, s.B, s.H}, b.options());  // (T, B, H)
  if (s.T > 0 && s.B > 0 && s.H > 0) scan(coef.contiguous(), b.contiguous(), h0.contiguous(), out, false);
  return out;
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

at::Tensor linear_recurrence_with(ScanFn scan, const at::Tensor& a, const at::Tensor& b, const at::Tensor& h0) {
  return forward_with(scan, a, b, h0, false);
}

at::Tensor dense_linear_recurrence_with(ScanFn scan, const at::Tensor& A, const at::Tensor& b, const at::Tensor& h0) {
  return forward_with(scan, A, b, h0, true);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_recurrence_backward_with(ScanFn scan, const at::Tensor& grad_h,
                                                                               const at::Tensor& a,
                                                                               const at::Tensor& h,
                                                                               const at::Tensor& h0) {
  const ScanSizes s = check_scan_args(a, grad_h, h0, false);
  check_backward_args(grad_h, h, grad_h);
  if (s.T == 0) return {at::zeros_like(a), at::zeros_like(grad_h), at::zeros_like(h0)};
  at::Tensor grad_b = adjoint_scan(scan, a, grad_h, s);  // (T, B, H)
  at::Tensor grad_a = grad_b * previous_states(h, h0);   // (T, B, H)
  at::Tensor grad_h0 = a[0] * grad_b[0];                 // (B, H)
  return {grad_a, grad_b, grad_h0};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dense_linear_recurrence_backward_with(ScanFn scan,
                                                                                     const at::Tensor& grad_h,
                                                                                     const at::Tensor& A,
                                                                                     const at::Tensor& h,
                                                                                     const at::Tensor& h0) {
  const ScanSizes s = check_scan_args(A, grad_h, h0, true);
  check_backward_args(grad_h, h, grad_h);
  if (s.T == 0) return {at::zeros_like(A), at::zeros_like(grad_h), at::zeros_like(h0)};
  at::Tensor grad_b = adjoint_scan(scan, A, grad_h, s);  // (T, B, H)
  // The outer products g_t h_{t-1}^T of every step at once. (T, B, H, H)
  at::Tensor grad_A = grad_b.unsqueeze(3) * previous_states(h, h0).unsqueeze(2);
  // A_0^T g_0 for every row. (B, H)
  at::Tensor grad_h0 = at::matmul(A[0].transpose(1, 2), grad_b[0].unsqueeze(2)).squeeze(2);
  return {grad_A, grad_b, grad_h0};
}

}  // namespace rnnfast
