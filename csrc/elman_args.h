// Argument checks and sizes of the Elman layer ops, shared by every backend so that a direct call of
// torch.ops.rnnfast.* with bad arguments fails with the same message on CPU and CUDA.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

namespace rnnfast {

// Sizes of one layer: T steps, B batch rows, I input features, H hidden units, D directions (1 or 2).
struct ElmanSizes {
  int64_t T, B, I, H, D;
};

inline void check_same_device_dtype(const at::Tensor& t, const at::Tensor& ref, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), "rnnfast: expected ", name, " on device ", ref.device(), ", got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "rnnfast: expected ", name, " of dtype ", ref.scalar_type(),
              ", got ", t.scalar_type());
}

inline void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* name) {
  TORCH_CHECK(t.sizes() == expected, "rnnfast: expected ", name, " of shape ", expected, ", got ", t.sizes());
}

// batch_sizes, when given, is PackedSequence's: a CPU int64 tensor of length T, non-increasing, with
// batch_sizes[0] == B, saying how many (length-sorted) batch rows are still running at each step.
inline void check_batch_sizes(const c10::optional<at::Tensor>& batch_sizes, int64_t T, int64_t B) {
  if (!batch_sizes.has_value()) return;
  const at::Tensor& bs = *batch_sizes;
  TORCH_CHECK(bs.device().is_cpu() && bs.scalar_type() == at::kLong && bs.dim() == 1,
              "rnnfast: expected batch_sizes to be a 1-D int64 CPU tensor, got ", bs.dim(), "-D ",
              bs.scalar_type(), " on ", bs.device());
  TORCH_CHECK(bs.numel() == T, "rnnfast: expected batch_sizes of length ", T, " (the number of steps), got ",
              bs.numel());
  const at::Tensor bsc = bs.contiguous();
  const int64_t* p = bsc.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(p[t] >= 1 && p[t] <= B && (t == 0 ? p[t] == B : p[t] <= p[t - 1]),
                "rnnfast: batch_sizes must start at the batch size ", B,
                " and never increase or reach 0; got batch_sizes[", t, "] = ", p[t]);
  }
}

inline ElmanSizes check_elman_forward_args(const at::Tensor& input, const at::Tensor& hx,
                                           const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                           const c10::optional<at::Tensor>& bias,
                                           const c10::optional<at::Tensor>& batch_sizes) {
  TORCH_CHECK(input.dim() == 3, "rnnfast: expected input of shape (T, B, input_size), got ", input.dim(),
              "-D input");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), "rnnfast: expected a floating-point input, got ",
              input.scalar_type());
  TORCH_CHECK(weight_ih.dim() == 3, "rnnfast: expected weight_ih of shape (D, H, input_size), got ",
              weight_ih.sizes());
  const ElmanSizes s{input.size(0), input.size(1), input.size(2), weight_ih.size(1), weight_ih.size(0)};
  TORCH_CHECK(s.D == 1 || s.D == 2, "rnnfast: expected 1 or 2 directions, got ", s.D);
  TORCH_CHECK(s.H > 0, "rnnfast: expected hidden_size > 0, got ", s.H);
  check_shape(weight_ih, {s.D, s.H, s.I}, "weight_ih");
  check_shape(weight_hh, {s.D, s.H, s.H}, "weight_hh");
  check_shape(hx, {s.D, s.B, s.H}, "hx");
  check_same_device_dtype(hx, input, "hx");
  check_same_device_dtype(weight_ih, input, "weight_ih");
  check_same_device_dtype(weight_hh, input, "weight_hh");
  if (bias.has_value()) {
    check_shape(*bias, {s.D, s.H}, "bias");
    check_same_device_dtype(*bias, input, "bias");
  }
  check_batch_sizes(batch_sizes, s.T, s.B);
  return s;
}

inline ElmanSizes check_elman_backward_args(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                            const at::Tensor& input, const at::Tensor& hx,
                                            const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                            const at::Tensor& output,
                                            const c10::optional<at::Tensor>& batch_sizes) {
  const ElmanSizes s = check_elman_forward_args(input, hx, weight_ih, weight_hh, c10::nullopt, batch_sizes);
  check_shape(output, {s.T, s.B, s.D * s.H}, "output");
  check_shape(grad_output, {s.T, s.B, s.D * s.H}, "grad_output");
  check_shape(grad_h_n, {s.D, s.B, s.H}, "grad_h_n");
  check_same_device_dtype(output, input, "output");
  check_same_device_dtype(grad_output, input, "grad_output");
  check_same_device_dtype(grad_h_n, input, "grad_h_n");
  return s;
}

}  // namespace rnnfast
