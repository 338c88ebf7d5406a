#include "elman_fused_step.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "device_limits.h"
#include "elman_fused_step_kernels.cuh"

namespace rnnfast {
namespace cuda {
namespace {

// Launches each step's kernel on the current stream; the kernel's shared-memory limit is raised once, before its
// first launch (its 80 KB are past the default 48).
class StepLauncher {
 public:
  StepLauncher() : stream_(c10::cuda::getCurrentCUDAStream()) {}

  template <typename Params>
  void operator()(void (*kernel)(Params), const Params& params, dim3 grid, size_t smem) {
    if (!configured_) {
      TORCH_CHECK(allow_dynamic_smem(kernel, smem), "rnnfast: the fused-step CUDA path needs ", smem,
                  " bytes of shared memory a block, more than this device allows");
      configured_ = true;
    }
    kernel<<<grid, elman_fused_step::kThreads, smem, stream_>>>(params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

 private:
  cudaStream_t stream_;
  bool configured_ = false;
};

}  // namespace

bool fused_step_supported(const ElmanSizes& s) { return elman_fused_step::supported(s); }

void fused_step_forward_recurrence(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                                   at::Tensor& h_n, const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  const c10::cuda::CUDAGuard guard(output.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "elman_fused_step_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      elman_fused_step::forward_recurrence<scalar_t, acc_t, act>(output, hx, weight_hh, h_n, s, batch_sizes,
                                                                 StepLauncher());
    });
  });
}

void fused_step_backward_recurrence(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                                    const at::Tensor& weight_hh, const ElmanSizes& s, const int64_t* batch_sizes,
                                    bool relu) {
  const c10::cuda::CUDAGuard guard(grad_z.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_z.scalar_type(), "elman_fused_step_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      elman_fused_step::backward_recurrence<scalar_t, acc_t, act>(grad_z, grad_h, output, weight_hh, s,
                                                                  batch_sizes, StepLauncher());
    });
  });
}

}  // namespace cuda
}  // namespace rnnfast
