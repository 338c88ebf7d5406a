// The Elman persistent kernels (csrc/cuda/elman_persistent_kernels.cuh: the one-block and split plans that the
// CUDA path takes by default at small batch), in float32, compiled for the CPU on the emulated CUDA of
// emulated_cuda.h and run inside the shared layer code (csrc/elman_layer.cpp), for tests/test_cuda_emulation.py.
// Every op takes the shared-memory budget that the plan is made for: a small one forces the split plan.
#include <torch/extension.h>

#include <limits>

#include "emulated_cuda.h"  // after torch's headers, before the kernels'

#include "cuda/elman_persistent_kernels.cuh"
#include "elman_layer.h"

namespace rnnfast {
namespace {

using namespace cuda::elman_persistent;

size_t smem_budget = kSingleBlockSmemBudget;  // for the op being called; the tests call one op at a time

Launch checked_plan(const ElmanSizes& s, const int64_t* batch_sizes, const at::Tensor& t) {
  TORCH_CHECK(batch_sizes == nullptr && t.scalar_type() == at::kFloat,
              "the emulated persistent kernels run float32 layers without packing");
  return plan_launch(s, smem_budget);
}

// The recurrences, as elman_persistent.cu runs them.
void emulated_forward(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh, at::Tensor& h_n,
                      const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  const Launch plan = checked_plan(s, batch_sizes, output);
  h_n.fill_(std::numeric_limits<float>::quiet_NaN());  // poisoned, so that an unwritten value shows
  const auto p = forward_params<float>(s, plan, output, hx, weight_hh, h_n);
  RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
    emulation::launch(plan_kernel<float, act>(plan, false), p, plan_grid(s, plan), kThreads, plan.forward_smem);
  });
}

void emulated_backward(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output, const at::Tensor& weight_hh,
                       const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  const Launch plan = checked_plan(s, batch_sizes, grad_z);
  const auto p = backward_params<float>(s, plan, grad_z, grad_h, output, weight_hh);
  RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
    emulation::launch(plan_kernel<float, act>(plan, true), p, plan_grid(s, plan), kThreads, plan.backward_smem);
  });
}

// The plan: units per block, blocks per direction, batch rows per block, batch blocks, grid-wide barrier.
std::tuple<int64_t, int64_t, int64_t, int64_t, bool> plan(int64_t T, int64_t B, int64_t H, int64_t D,
                                                          int64_t budget) {
  const Launch p = plan_launch(ElmanSizes{T, B, H, H, D}, static_cast<size_t>(budget));
  return {p.units_per_block, p.blocks_per_direction, p.batch_per_block, p.batch_blocks, p.grid_sync};
}

}  // namespace
}  // namespace rnnfast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace rnnfast;
  using Tensor = const at::Tensor&;
  m.def("plan", &plan);
  m.def("elman_layer_forward", [](int64_t budget, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh,
                                  const c10::optional<at::Tensor>& bias, bool relu) {
    smem_budget = static_cast<size_t>(budget);
    return elman_layer_forward_with(emulated_forward, input, hx, w_ih, w_hh, bias, c10::nullopt, relu);
  });
  m.def("elman_layer_backward", [](int64_t budget, Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor hx,
                                   Tensor w_ih, Tensor w_hh, Tensor output, bool relu) {
    smem_budget = static_cast<size_t>(budget);
    return elman_layer_backward_with(emulated_backward, grad_output, grad_h_n, input, hx, w_ih, w_hh, output,
                                     c10::nullopt, relu);
  });
}
