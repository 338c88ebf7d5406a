// The kernels of RNNFAST_CUDA_PATH=fused, compiled for the CPU on the emulated CUDA of emulated_cuda.h, for
// tests/test_cuda_emulation.py: the Elman fused-step path (csrc/cuda/elman_fused_step_kernels.cuh: its kernels and
// host loops) run inside the shared layer code (csrc/elman_layer.cpp), as layer ops with the real ops'
// signatures, in every dtype the CUDA path takes (16-bit ones with float32 sums, as there), packed sequences
// included; and the tiled per-step product the gated cells' loop takes under that setting (step_product.cuh's
// product_kernel).
#include <torch/extension.h>

#include <ATen/OpMathType.h>

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
void emulated_forward(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                      const at::Tensor& /*bias: in output already*/, at::Tensor& h_n, const ElmanSizes& s,
                      const int64_t* batch_sizes, bool relu) {
  h_n.fill_(std::numeric_limits<double>::quiet_NaN());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "emulated_fused_step_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      fused::forward_recurrence<scalar_t, acc_t, act>(output, hx, weight_hh, h_n, s, batch_sizes, EmulatedLaunch());
    });
  });
}

void emulated_backward(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output, const at::Tensor& weight_hh,
                       const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_z.scalar_type(), "emulated_fused_step_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      fused::backward_recurrence<scalar_t, acc_t, act>(grad_z, grad_h, output, weight_hh, s, batch_sizes,
                                                       EmulatedLaunch());
    });
  });
}

// c (m x n) = a (m x k) @ b (k x n) [+ c when accumulate], each a 2-D tensor with unit column stride, as
// step_gemm.h launches the tiles.
void tiled_product(const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool accumulate) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2 && a.stride(1) == 1 && b.stride(1) == 1 &&
              c.stride(1) == 1 && a.size(1) == b.size(0) && c.size(0) == a.size(0) && c.size(1) == b.size(1),
              "tiled_product: expected a (m, k), b (k, n), c (m, n) with unit column strides");
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "emulated_tiled_product", [&] {
    namespace sp = cuda::step_product;
    const sp::ProductParams<scalar_t> p{a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
                                        c.data_ptr<scalar_t>(), a.stride(0), b.stride(0), c.stride(0),
                                        static_cast<int>(a.size(0)), static_cast<int>(b.size(1)),
                                        static_cast<int>(a.size(1)), accumulate};
    emulation::launch(sp::product_kernel<scalar_t, scalar_t>, p, sp::product_grid(a.size(0), b.size(1)),
                      sp::kThreads, sp::shared_bytes<scalar_t>());
  });
}

}  // namespace
}  // namespace rnnfast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace rnnfast;
  using Tensor = const at::Tensor&;
  using Optional = const c10::optional<at::Tensor>&;
  m.def("tiled_product", &tiled_product);
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
