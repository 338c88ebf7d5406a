// The Elman fused-step CUDA path (csrc/cuda/elman_fused_step_kernels.cuh: its kernels and its host loops),
// compiled for the CPU on the emulated CUDA of emulated_cuda.h and run inside the shared layer code
// (csrc/elman_layer.cpp), for tests/test_cuda_emulation.py: the layer ops with the real ops' signatures, float32
// and float64, packed sequences included.
#include <torch/extension.h>

#include <limits>

#include "emulated_cuda.h"  // after torch's headers, before the kernels'

#include "cuda/elman_fused_step_kernels.cuh"
#include "elman_layer.h"

namespace rnnfast {
namespace {

namespace fused = cuda::elman_fused_step;

struct EmulatedLaunch {
  template <typename Params>
  void operator()(void (*kernel)(Params), const Params& params, dim3 grid, size_t smem) const {
    emulation::launch(kernel, params, grid, fused::kThreads, smem);
  }
};

// h_n poisoned first, so that a value the kernels never write shows.
void emulated_forward(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh, at::Tensor& h_n,
                      const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  h_n.fill_(std::numeric_limits<double>::quiet_NaN());
  AT_DISPATCH_FLOATING_TYPES(output.scalar_type(), "emulated_fused_step_forward", [&] {
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      fused::forward_recurrence<scalar_t, scalar_t, act>(output, hx, weight_hh, h_n, s, batch_sizes,
                                                         EmulatedLaunch());
    });
  });
}

void emulated_backward(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output, const at::Tensor& weight_hh,
                       const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  AT_DISPATCH_FLOATING_TYPES(grad_z.scalar_type(), "emulated_fused_step_backward", [&] {
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      fused::backward_recurrence<scalar_t, scalar_t, act>(grad_z, grad_h, output, weight_hh, s, batch_sizes,
                                                          EmulatedLaunch());
    });
  });
}

}  // namespace
}  // namespace rnnfast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace rnnfast;
  using Tensor = const at::Tensor&;
  using Optional = const c10::optional<at::Tensor>&;
  m.def("elman_layer_forward", [](Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Optional bias,
                                  Optional batch_sizes, bool relu) {
    return elman_layer_forward_with(emulated_forward, input, hx, w_ih, w_hh, bias, batch_sizes, relu);
  });
  m.def("elman_layer_backward", [](Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor hx, Tensor w_ih,
                                   Tensor w_hh, Tensor output, Optional batch_sizes, bool relu) {
    return elman_layer_backward_with(emulated_backward, grad_output, grad_h_n, input, hx, w_ih, w_hh, output,
                                     batch_sizes, relu);
  });
}
