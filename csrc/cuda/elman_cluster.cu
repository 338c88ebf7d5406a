#include "elman_cluster.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>

#include <climits>
#include <map>
#include <mutex>
#include <tuple>

#include "device_limits.h"
#include "elman_cluster_kernels.cuh"

namespace rnnfast {
namespace cuda {
namespace {

using namespace elman_cluster;

cudaLaunchConfig_t launch_config(const ElmanSizes& s, const ClusterPlan& plan, cudaLaunchAttribute* attribute) {
  cudaLaunchConfig_t config{};
  config.gridDim = persistent_grid(s, plan);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = plan.smem;
  attribute->id = cudaLaunchAttributeClusterDimension;
  attribute->val.clusterDim.x = static_cast<unsigned>(plan.cluster_size);
  attribute->val.clusterDim.y = 1;
  attribute->val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  return config;
}

// Whether at least one cluster of the plan fits the device (clusters are independent: any number can run, in
// waves). The occupancy query is a driver call, which each layer call would otherwise make three times (choosing
// the path asks it of both kernels, launching of its own), so its answer is kept per kernel, device, cluster size
// and shared memory, as device_limits.h keeps the others.
bool cluster_fits(void (*kernel)(ClusterParams), const ElmanSizes& s, const ClusterPlan& plan) {
  if (!allow_dynamic_smem(kernel, plan.smem)) return false;
  static std::mutex mutex;
  static std::map<std::tuple<void (*)(ClusterParams), int, int, size_t>, bool> known;
  const auto key = std::make_tuple(kernel, static_cast<int>(c10::cuda::current_device()), plan.cluster_size,
                                   plan.smem);
  const std::lock_guard<std::mutex> lock(mutex);
  const auto found = known.find(key);
  if (found != known.end()) return found->second;
  cudaLaunchAttribute attribute;
  const cudaLaunchConfig_t config = launch_config(s, plan, &attribute);
  int clusters = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
  return known[key] = clusters > 0;
}

void launch(void (*kernel)(ClusterParams), ClusterParams params, const ElmanSizes& s, const ClusterPlan& plan) {
  TORCH_CHECK(cluster_fits(kernel, s, plan), "rnnfast: the cluster CUDA path cannot hold this layer on the device "
              "(B=", s.B, ", H=", s.H, ")");
  cudaLaunchAttribute attribute;
  cudaLaunchConfig_t config = launch_config(s, plan, &attribute);
  config.stream = c10::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, params));
}

}  // namespace

bool cluster_supported(const ElmanSizes& s, at::ScalarType dtype, bool packed) {
  if (packed || dtype != at::kFloat || s.T == 0 || s.B == 0) return false;
  if (s.T > INT_MAX || s.B * s.D * s.H > INT_MAX) return false;
  if (device_limits(c10::cuda::current_device()).major < 9) return false;
  const ClusterPlan plan = plan_cluster(s);
  return plan.feasible && cluster_fits(forward_kernel<Activation::Tanh>(plan.kpt), s, plan) &&
         cluster_fits(backward_kernel<Activation::Tanh>(plan.kpt), s, plan);
}

void cluster_forward_recurrence(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                                at::Tensor& h_n, const ElmanSizes& s, bool relu) {
  const c10::cuda::CUDAGuard guard(output.device());
  const ClusterPlan plan = plan_cluster(s);
  const ClusterParams p = forward_params(s, plan, output, hx, weight_hh, h_n);
  RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] { launch(forward_kernel<act>(plan.kpt), p, s, plan); });
}

void cluster_backward_recurrence(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                                 const at::Tensor& weight_hh, const ElmanSizes& s, bool relu) {
  const c10::cuda::CUDAGuard guard(grad_z.device());
  const ClusterPlan plan = plan_cluster(s);
  const ClusterParams p = backward_params(s, plan, grad_z, grad_h, output, weight_hh);
  RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] { launch(backward_kernel<act>(plan.kpt), p, s, plan); });
}

}  // namespace cuda
}  // namespace rnnfast
