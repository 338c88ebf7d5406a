// The Elman CUDA kernels of the persistent path, compiled for the CPU on the emulated CUDA of emulated_cuda.h and
// run inside the shared layer code (csrc/elman_layer.cpp), for tests/test_cuda_emulation.py: the one-block and
// split plans (csrc/cuda/elman_persistent_kernels.cuh, float32), which the CUDA path takes by default at small
// batch, and the cluster plan (csrc/cuda/elman_cluster_kernels.cuh). Every op names the kernels and the plan's
// knobs: for "persistent" the shared-memory budget (a small one forces the split plan); for "cluster" the smallest
// cluster size and the batch rows per cluster, so that small layers take the plans larger ones get.
#include <torch/extension.h>

#include <limits>
#include <string>

#include "emulated_cuda.h"  // after torch's headers, before the kernels'

#include "cuda/elman_cluster_kernels.cuh"
#include "cuda/elman_persistent_kernels.cuh"
#include "elman_layer.h"

namespace rnnfast {
namespace {

namespace cluster = cuda::elman_cluster;
namespace persistent = cuda::elman_persistent;

// The kernels and knobs of the op being called; the tests call one op at a time.
struct Setting {
  bool cluster = false;
  int64_t first = 0, second = 0;  // persistent: budget; cluster: smallest cluster size, rows per cluster
};
Setting setting;

void check(const int64_t* batch_sizes, const at::Tensor& t) {
  TORCH_CHECK(batch_sizes == nullptr && t.scalar_type() == at::kFloat,
              "the emulated kernels run float32 layers without packing");
}

cluster::ClusterPlan cluster_plan(const ElmanSizes& s) {
  const auto plan = cluster::plan_cluster(s, static_cast<int>(setting.first), static_cast<int>(setting.second));
  TORCH_CHECK(plan.feasible, "no cluster plan for H = ", s.H);
  return plan;
}

// The recurrences, as elman_persistent.cu and elman_cluster.cu run them; h_n poisoned first, so that an
// unwritten value shows.
void emulated_forward(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                      const at::Tensor& /*bias: in output already*/, at::Tensor& h_n, const ElmanSizes& s,
                      const int64_t* batch_sizes, bool relu) {
  check(batch_sizes, output);
  h_n.fill_(std::numeric_limits<float>::quiet_NaN());
  RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
    if (setting.cluster) {
      const auto plan = cluster_plan(s);
      emulation::launch(cluster::forward_kernel<act>(plan.kpt), cluster::forward_params(s, plan, output, hx,
                        weight_hh, h_n), cuda::persistent_grid(s, plan), cluster::kThreads, plan.smem,
                        plan.cluster_size);  // fmt: skip
    } else {
      const auto plan = persistent::plan_launch(s, static_cast<size_t>(setting.first));
      emulation::launch(persistent::plan_kernel<float, act>(plan, false),
                        persistent::forward_params<float>(s, plan, output, hx, weight_hh, h_n),
                        cuda::persistent_grid(s, plan), persistent::kThreads, plan.forward_smem);
    }
  });
}

void emulated_backward(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output, const at::Tensor& weight_hh,
                       const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  check(batch_sizes, grad_z);
  RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
    if (setting.cluster) {
      const auto plan = cluster_plan(s);
      emulation::launch(cluster::backward_kernel<act>(plan.kpt), cluster::backward_params(s, plan, grad_z, grad_h,
                        output, weight_hh), cuda::persistent_grid(s, plan), cluster::kThreads, plan.smem,
                        plan.cluster_size);  // fmt: skip
    } else {
      const auto plan = persistent::plan_launch(s, static_cast<size_t>(setting.first));
      emulation::launch(persistent::plan_kernel<float, act>(plan, true),
                        persistent::backward_params<float>(s, plan, grad_z, grad_h, output, weight_hh),
                        cuda::persistent_grid(s, plan), persistent::kThreads, plan.backward_smem);
    }
  });
}

void set(const std::string& kernels, int64_t first, int64_t second) {
  TORCH_CHECK(kernels == "persistent" || kernels == "cluster", "kernels: persistent or cluster, got ", kernels);
  setting = Setting{kernels == "cluster", first, second};
}

// The cluster plan: cluster size, units per block, threads per unit, weights per thread, batch rows per cluster.
std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t> cluster_plan_of(int64_t T, int64_t B, int64_t H, int64_t D,
                                                                        int64_t min_cluster, int64_t rows) {
  set("cluster", min_cluster, rows);
  const auto p = cluster_plan(ElmanSizes{T, B, H, H, D});
  return {p.cluster_size, p.units_per_block, p.threads_per_unit, p.kpt, p.batch_per_block};
}

// The persistent plan: units per block, blocks per direction, batch rows per block, batch blocks, grid barrier.
std::tuple<int64_t, int64_t, int64_t, int64_t, bool> persistent_plan_of(int64_t T, int64_t B, int64_t H, int64_t D,
                                                                        int64_t budget) {
  const auto p = persistent::plan_launch(ElmanSizes{T, B, H, H, D}, static_cast<size_t>(budget));
  return {p.units_per_block, p.blocks_per_direction, p.batch_per_block, p.batch_blocks, p.grid_sync};
}

}  // namespace
}  // namespace rnnfast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace rnnfast;
  using Tensor = const at::Tensor&;
  m.def("cluster_plan", &cluster_plan_of);
  m.def("persistent_plan", &persistent_plan_of);
  m.def("elman_layer_forward", [](const std::string& kernels, int64_t first, int64_t second, Tensor input, Tensor hx,
                                  Tensor w_ih, Tensor w_hh, const c10::optional<at::Tensor>& bias, bool relu) {
    set(kernels, first, second);
    return elman_layer_forward_with(emulated_forward, input, hx, w_ih, w_hh, bias, c10::nullopt, relu);
  });
  m.def("elman_layer_backward", [](const std::string& kernels, int64_t first, int64_t second, Tensor grad_output,
                                   Tensor grad_h_n, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Tensor output,
                                   bool relu) {
    set(kernels, first, second);
    return elman_layer_backward_with(emulated_backward, grad_output, grad_h_n, input, hx, w_ih, w_hh, output,
                                     c10::nullopt, relu);
  });
}
