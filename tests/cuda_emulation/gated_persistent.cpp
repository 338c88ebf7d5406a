// The persistent gated CUDA kernels (csrc/cuda/gated_persistent_kernels.cuh), compiled for the CPU on the
// emulated CUDA of emulated_cuda.h and run inside the shared layer code (csrc/gated_layer.cpp), so that
// tests/test_cuda_emulation.py can check their source against the CPU kernels without a GPU. Every op takes the
// shared-memory budget that the plan is made for: a small one forces the split plan (several blocks per
// direction, a grid-wide barrier per step) at sizes small enough for one CPU thread per CUDA thread.
#include <torch/extension.h>

#include <limits>

#include "emulated_cuda.h"  // after torch's headers, before the kernels'

#include "cuda/gated_persistent_kernels.cuh"

namespace rnnfast {
namespace {

using namespace cuda::gated_persistent;

size_t smem_budget = kSmemBudget;  // for the op being called; the tests call one op at a time

void fill_nan(const at::Tensor& t) {
  if (t.defined()) t.fill_(std::numeric_limits<float>::quiet_NaN());
}

// The recurrences, as gated_persistent.cu runs them, with every buffer the kernel writes poisoned first, so that
// a value it fails to write shows.
template <typename Cell>
void emulated_forward(GatedForwardBuffers& buf, const GatedSizes& s, const int64_t* batch_sizes) {
  TORCH_CHECK(batch_sizes == nullptr && buf.output.scalar_type() == at::kFloat && s.P == s.H,
              "the persistent kernels run float32 layers without packing or projection");
  const GatedPlan plan = plan_launch(s, smem_budget);
  fill_nan(buf.output);
  fill_nan(buf.workspace);
  const at::Tensor gates_x = whole_input_projection(buf, s);
  emulation::launch(forward_kernel<Cell>(plan), forward_params(buf, s, plan, gates_x),
                    cuda::persistent_grid(s, plan), kThreads, plan.forward_smem);
}

template <typename Cell>
void emulated_backward(GatedBackwardBuffers& buf, const GatedSizes& s, const int64_t* batch_sizes) {
  TORCH_CHECK(batch_sizes == nullptr && buf.grad_h_seq.scalar_type() == at::kFloat && s.P == s.H,
              "the persistent kernels run float32 layers without packing or projection");
  const GatedPlan plan = plan_launch(s, smem_budget);
  fill_nan(buf.grad_gates_x);
  fill_nan(buf.grad_gates_h);
  emulation::launch(backward_kernel<Cell>(plan), backward_params(buf, s, plan), cuda::persistent_grid(s, plan),
                    kThreads, plan.backward_smem);
}

// The plan for a layer of `gates` gates: units per block, blocks per direction, batch rows per block, batch
// blocks, and whether the blocks meet at a grid-wide barrier.
std::tuple<int64_t, int64_t, int64_t, int64_t, bool> plan(int64_t T, int64_t B, int64_t H, int64_t D, int64_t gates,
                                                          int64_t budget) {
  const GatedSizes s{T, B, H, H, H, D, gates, 0};
  const GatedPlan p = plan_launch(s, static_cast<size_t>(budget));
  return {p.units_per_block, p.blocks_per_direction, p.batch_per_block, p.batch_blocks, p.grid_sync};
}

}  // namespace
}  // namespace rnnfast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace rnnfast;
  using Tensor = const at::Tensor&;
  using Optional = const c10::optional<at::Tensor>&;
  m.def("plan", &plan);
  m.def("lstm_layer_forward", [](int64_t budget, Tensor input, Tensor hx, Tensor cx, Tensor w_ih, Tensor w_hh,
                                 Optional bias, bool save_workspace) {
    smem_budget = static_cast<size_t>(budget);
    return lstm_layer_forward_with(emulated_forward<LstmCell>, input, hx, cx, w_ih, w_hh, bias, c10::nullopt,
                                   c10::nullopt, save_workspace);
  });
  m.def("lstm_layer_backward", [](int64_t budget, Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input,
                                  Tensor hx, Tensor cx, Tensor w_ih, Tensor w_hh, Tensor output, Tensor workspace) {
    smem_budget = static_cast<size_t>(budget);
    return lstm_layer_backward_with(emulated_backward<LstmCell>, grad_output, grad_h_n, grad_c_n, input, hx, cx,
                                    w_ih, w_hh, c10::nullopt, output, workspace, c10::nullopt);
  });
  m.def("gru_layer_forward", [](int64_t budget, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Optional b_ih,
                                Optional b_hh, bool save_workspace) {
    smem_budget = static_cast<size_t>(budget);
    return gru_layer_forward_with(emulated_forward<GruCell>, input, hx, w_ih, w_hh, b_ih, b_hh, c10::nullopt,
                                  save_workspace);
  });
  m.def("gru_layer_backward", [](int64_t budget, Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor hx,
                                 Tensor w_ih, Tensor w_hh, Tensor output, Tensor workspace) {
    smem_budget = static_cast<size_t>(budget);
    return gru_layer_backward_with(emulated_backward<GruCell>, grad_output, grad_h_n, input, hx, w_ih, w_hh, output,
                                   workspace, c10::nullopt);
  });
}
