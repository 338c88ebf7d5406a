// bfloat16 and float16 layers on kernels that have no 16-bit loop: the CPU loops (no 16-bit BLAS product) and
// the gated CUDA loops. A 16-bit op runs on float32 copies of its arguments and rounds its results once at the
// end: float32 accumulation, and no rounding of the state between steps. Widened<op>::call wraps any op
// implementation this way.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace rnnfast {
namespace widening {

inline bool is_16bit(const at::Tensor& t) {
  return t.defined() && (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf);
}

// Every floating-point tensor argument's dtype, checked against the first's; non-tensors pass.
template <typename T>
bool same_floating_dtype(const T&, at::ScalarType) { return true; }
inline bool same_floating_dtype(const at::Tensor& t, at::ScalarType dtype) {
  return !t.defined() || !t.is_floating_point() || t.scalar_type() == dtype;
}
inline bool same_floating_dtype(const c10::optional<at::Tensor>& t, at::ScalarType dtype) {
  return !t.has_value() || same_floating_dtype(*t, dtype);
}

template <typename T>
const T& widened(const T& arg) { return arg; }
inline at::Tensor widened(const at::Tensor& t) { return is_16bit(t) ? t.to(at::kFloat) : t; }
inline c10::optional<at::Tensor> widened(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? c10::optional<at::Tensor>(widened(*t)) : c10::nullopt;
}

template <typename... Tensors>
std::tuple<Tensors...> narrowed(at::ScalarType dtype, std::tuple<Tensors...> results) {
  std::apply([&](auto&... t) { ((t = t.defined() ? t.to(dtype) : t), ...); }, results);
  return results;
}

}  // namespace widening

template <auto op>
struct Widened;

template <typename Result, typename First, typename... Rest, Result (*op)(const First&, Rest...)>
struct Widened<op> {
  static Result call(const First& first, Rest... rest) {
    // The first argument is the op's lead tensor (input or grad_output). If any floating-point argument has
    // another dtype, the op runs unwidened, so that its own checks name the argument at fault.
    if (!widening::is_16bit(first) || !(widening::same_floating_dtype(rest, first.scalar_type()) && ...)) {
      return op(first, rest...);
    }
    return widening::narrowed(first.scalar_type(), op(widening::widened(first), widening::widened(rest)...));
  }
};

}  // namespace rnnfast
