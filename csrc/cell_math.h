// The Elman cell's activations and their derivatives: the one definition shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define RNNFAST_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RNNFAST_HOST_DEVICE inline
#endif

namespace rnnfast {

enum class Activation { Tanh, Relu };

template <Activation A>
struct ActivationFn;

template <>
struct ActivationFn<Activation::Tanh> {
  template <typename acc_t>
  static RNNFAST_HOST_DEVICE acc_t forward(acc_t z) {
    using std::tanh;
    return tanh(z);
  }
  // The backward is written in terms of the saved output h = tanh(z), so the pre-activation need not be kept.
  template <typename acc_t>
  static RNNFAST_HOST_DEVICE acc_t derivative_from_output(acc_t h) {
    return acc_t(1) - h * h;
  }
};

template <>
struct ActivationFn<Activation::Relu> {
  template <typename acc_t>
  static RNNFAST_HOST_DEVICE acc_t forward(acc_t z) {
    // z > 0 ? z : 0 keeps NaN as NaN on both sides of the comparison, as torch.relu does.
    return z > acc_t(0) ? z : (z != z ? z : acc_t(0));
  }
  template <typename acc_t>
  static RNNFAST_HOST_DEVICE acc_t derivative_from_output(acc_t h) {
    return h > acc_t(0) ? acc_t(1) : acc_t(0);
  }
};

// Turns the runtime flag into a compile-time activation, so the per-step loops carry no branch on it.
#define RNNFAST_DISPATCH_ACTIVATION(relu, ACT, ...)                 \
  [&] {                                                            \
    if (relu) {                                                    \
      constexpr ::rnnfast::Activation ACT = ::rnnfast::Activation::Relu; \
      return __VA_ARGS__();                                        \
    } else {                                                       \
      constexpr ::rnnfast::Activation ACT = ::rnnfast::Activation::Tanh; \
      return __VA_ARGS__();                                        \
    }                                                              \
  }()

}  // namespace rnnfast
