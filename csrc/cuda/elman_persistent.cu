#include "elman_persistent.h"

#include <c10/cuda/CUDAGuard.h>

#include "elman_persistent_kernels.cuh"
#include "persistent_common.cuh"

namespace rnnfast {
namespace cuda {
namespace {

using namespace elman_persistent;

template <typename Kernel>
bool fits_on_device(Kernel kernel, const ElmanSizes& s, const Launch& plan, size_t smem) {
  return persistent_blocks_fit(reinterpret_cast<const void*>(kernel), kThreads, smem, plan.grid_sync,
                               total_blocks(s, plan));
}

template <typename Kernel, typename scalar_t>
void launch(Kernel kernel, PersistentParams<scalar_t> params, const ElmanSizes& s, const Launch& plan, size_t smem) {
  TORCH_CHECK(fits_on_device(kernel, s, plan, smem),
              "rnnfast: the persistent CUDA path cannot hold this layer on the device (B=", s.B, ", H=", s.H, ")");
  launch_persistent(kernel, params, persistent_grid(s, plan), kThreads, smem, plan.grid_sync);
}

// The persistent kernels' dtypes: all accumulate in float32.
template <typename F>
void dispatch_float_types(at::ScalarType dtype, const F& f) {
  switch (dtype) {
    case at::kFloat: return f(float{});
    case at::kHalf: return f(c10::Half{});
    case at::kBFloat16: return f(c10::BFloat16{});
    default: TORCH_CHECK(false, "rnnfast: the persistent CUDA path has no kernel for ", dtype);
  }
}

}  // namespace

bool persistent_supported(const ElmanSizes& s, at::ScalarType dtype, bool packed) {
  if (packed || s.B == 0) return false;
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) return false;
  if (s.T > INT32_MAX || s.B * s.D * s.H > INT32_MAX) return false;
  const Launch plan = plan_launch(s);
  return fits_on_device(plan_kernel<float, Activation::Tanh>(plan, false), s, plan, plan.forward_smem) &&
         fits_on_device(plan_kernel<float, Activation::Tanh>(plan, true), s, plan, plan.backward_smem);
}

bool persistent_needs_grid_sync(const ElmanSizes& s) { return plan_launch(s).grid_sync; }

void persistent_forward_recurrence(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                                   at::Tensor& h_n, const ElmanSizes& s, bool relu) {
  const c10::cuda::CUDAGuard guard(output.device());
  const Launch plan = plan_launch(s);
  dispatch_float_types(output.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
        const auto p = forward_params<scalar_t>(s, plan, output, hx, weight_hh, h_n);
        launch(plan_kernel<scalar_t, act>(plan, false), p, s, plan, plan.forward_smem);
      });
  });
}

void persistent_backward_recurrence(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                                    const at::Tensor& weight_hh, const ElmanSizes& s, bool relu) {
  const c10::cuda::CUDAGuard guard(grad_z.device());
  const Launch plan = plan_launch(s);
  dispatch_float_types(grad_z.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
        const auto p = backward_params<scalar_t>(s, plan, grad_z, grad_h, output, weight_hh);
        launch(plan_kernel<scalar_t, act>(plan, true), p, s, plan, plan.backward_smem);
      });
  });
}

}  // namespace cuda
}  // namespace rnnfast
