// The Elman cell's activations and their derivatives: the one definition shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define RNNFAST_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RNNFAST_HOST_DEVICE inline
#endif

namespace rnnfast {

enum class Activation { Tanh, Relu };

// tanh of a float32. On the CPU a rational approximation (the one Eigen uses), within a few ulp of tanhf and
// branch-free, so the per-step activation loop vectorises: glibc's tanhf costs far more per element and was most
// of the CPU time loop. On the GPU, CUDA's tanhf.
RNNFAST_HOST_DEVICE float tanh_float(float x) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return tanhf(x);
#else
  // At +-7.9988 the rational below, evaluated in fused multiply-adds, rounds to exactly +-1 (Eigen's clamp for
  // FMA; the unfused one's, 7.9053, gave 1 - 2^-22 there), so a saturated unit's derivative 1 - h^2 is 0, as
  // torch's: an infinite input then gives torch.nn's NaN gradient, not infinity. The comparisons leave NaN as NaN.
  constexpr float clamp = 7.99881172180175781f;
  const float xc = x < -clamp ? -clamp : (x > clamp ? clamp : x);
  const float x2 = xc * xc;
  // Fused multiply-adds, explicitly: the build turns off contraction so that the CPU variants agree bit for bit
  // (simd_target.h), and std::fma gives the same bits in each, one instruction in the AVX2 and AVX-512 variants
  // (the gates' pointwise passes ran 1.4x faster) and the C library's fmaf in the baseline one, slower but only
  // run on CPUs without FMA, none made since 2013.
  float p = std::fma(x2, -2.76076847742355e-16f, 2.00018790482477e-13f);
  p = std::fma(x2, p, -8.60467152213735e-11f);
  p = std::fma(x2, p, 5.12229709037114e-08f);
  p = std::fma(x2, p, 1.48572235717979e-05f);
  p = std::fma(x2, p, 6.37261928875436e-04f);
  p = std::fma(x2, p, 4.89352455891786e-03f);
  p = xc * p;
  float q = std::fma(x2, 1.19825839466702e-06f, 1.18534705686654e-04f);
  q = std::fma(x2, q, 2.26843463243900e-03f);
  q = std::fma(x2, q, 4.89352518554385e-03f);
  // The division is done unconditionally: a division only on one side of a branch would not be vectorised.
  const float ratio = p / q;
  // Near 0 tanh(x) = x to float32 precision, and the ratio would lose relative accuracy.
  return std::fabs(xc) < 0.0004f ? xc : ratio;
#endif
}

template <Activation A>
struct ActivationFn;

template <>
struct ActivationFn<Activation::Tanh> {
  template <typename acc_t>
  static RNNFAST_HOST_DEVICE acc_t forward(acc_t z) {
    if constexpr (std::is_same_v<acc_t, float>) {
      return tanh_float(z);
    } else {
      using std::tanh;
      return tanh(z);
    }
  }
  // dL/dz from dL/dh and the saved output h = tanh(z), so the pre-activation need not be kept. A product, as in
  // torch's tanh_backward, so NaN and inf propagate the same way.
  template <typename acc_t>
  static RNNFAST_HOST_DEVICE acc_t backward_from_output(acc_t grad, acc_t h) {
    return grad * (acc_t(1) - h * h);
  }
};

template <>
struct ActivationFn<Activation::Relu> {
  template <typename acc_t>
  static RNNFAST_HOST_DEVICE acc_t forward(acc_t z) {
    // z > 0 ? z : 0 keeps NaN as NaN on both sides of the comparison, as torch.relu does.
    return z > acc_t(0) ? z : (z != z ? z : acc_t(0));
  }
  // A selection, not a product with 0 or 1, written as torch's threshold_backward(grad, h, 0) is: a NaN or inf
  // gradient at a unit that is off gives 0, and a NaN output passes its gradient through.
  template <typename acc_t>
  static RNNFAST_HOST_DEVICE acc_t backward_from_output(acc_t grad, acc_t h) {
    return h <= acc_t(0) ? acc_t(0) : grad;
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
