// The Elman cluster kernels (csrc/cuda/elman_cluster_kernels.cuh), compiled for the CPU on the emulated CUDA of
// emulated_cuda.h and run inside the shared layer code (csrc/elman_layer.cpp), for tests/test_cuda_emulation.py.
// Every op takes the smallest cluster size and the batch rows per cluster that the plan is to use, so that small
// layers can take the plans that larger ones get (several blocks per cluster, several batch slices).
#include <torch/extension.h>

#include <limits>

#include "emulated_cuda.h"  // after torch's headers, before the kernels'

#include "cuda/elman_cluster_kernels.cuh"
#include "elman_layer.h"

namespace rnnfast {
namespace {

using namespace cuda::elman_cluster;

int min_cluster_size = 1, rows_per_cluster = 0;  // for the op being called; the tests call one op at a time

ClusterPlan checked_plan(const ElmanSizes& s, const int64_t* batch_sizes, const at::Tensor& t) {
  TORCH_CHECK(batch_sizes == nullptr && t.scalar_type() == at::kFloat,
              "the cluster kernels run float32 layers without packing");
  const ClusterPlan plan = plan_cluster(s, min_cluster_size, rows_per_cluster);
  TORCH_CHECK(plan.feasible, "no cluster plan for H = ", s.H);
  return plan;
}

// The recurrences, as elman_cluster.cu runs them.
void emulated_forward(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh, at::Tensor& h_n,
                      const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  const ClusterPlan plan = checked_plan(s, batch_sizes, output);
  h_n.fill_(std::numeric_limits<float>::quiet_NaN());  // poisoned, so that an unwritten value shows
  const ClusterParams p = forward_params(s, plan, output, hx, weight_hh, h_n);
  RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
    emulation::launch(forward_kernel<act>(plan.kpt), p, cluster_grid(s, plan), kThreads, plan.smem,
                      plan.cluster_size);
  });
}

void emulated_backward(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output, const at::Tensor& weight_hh,
                       const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  const ClusterPlan plan = checked_plan(s, batch_sizes, grad_z);
  const ClusterParams p = backward_params(s, plan, grad_z, grad_h, output, weight_hh);
  RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
    emulation::launch(backward_kernel<act>(plan.kpt), p, cluster_grid(s, plan), kThreads, plan.smem,
                      plan.cluster_size);
  });
}

// The plan: cluster size, units per block, threads per unit, weights per thread, batch rows per cluster.
std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t> plan(int64_t T, int64_t B, int64_t H, int64_t D,
                                                             int64_t min_cluster, int64_t rows) {
  const ClusterPlan p = plan_cluster(ElmanSizes{T, B, H, H, D}, static_cast<int>(min_cluster), static_cast<int>(rows));
  TORCH_CHECK(p.feasible, "no cluster plan for H = ", H);
  return {p.cluster_size, p.units_per_block, p.threads_per_unit, p.kpt, p.batch_per_block};
}

}  // namespace
}  // namespace rnnfast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace rnnfast;
  using Tensor = const at::Tensor&;
  m.def("plan", &plan);
  m.def("elman_layer_forward", [](int64_t min_cluster, int64_t rows, Tensor input, Tensor hx, Tensor w_ih,
                                  Tensor w_hh, const c10::optional<at::Tensor>& bias, bool relu) {
    min_cluster_size = static_cast<int>(min_cluster);
    rows_per_cluster = static_cast<int>(rows);
    return elman_layer_forward_with(emulated_forward, input, hx, w_ih, w_hh, bias, c10::nullopt, relu);
  });
  m.def("elman_layer_backward", [](int64_t min_cluster, int64_t rows, Tensor grad_output, Tensor grad_h_n,
                                   Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Tensor output, bool relu) {
    min_cluster_size = static_cast<int>(min_cluster);
    rows_per_cluster = static_cast<int>(rows);
    return elman_layer_backward_with(emulated_backward, grad_output, grad_h_n, input, hx, w_ih, w_hh, output,
                                     c10::nullopt, relu);
  });
}
