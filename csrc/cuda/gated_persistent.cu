#include "gated_persistent.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>

#include <climits>

#include "gated_persistent_kernels.cuh"
#include "persistent_common.cuh"

namespace rnnfast {
namespace cuda {
namespace {

using namespace gated_persistent;

template <typename Kernel>
bool plan_fits(Kernel kernel, const GatedSizes& s, const GatedPlan& plan, size_t smem) {
  return persistent_blocks_fit(reinterpret_cast<const void*>(kernel), kThreads, smem, plan.grid_sync,
                               s.D * plan.blocks_per_direction * static_cast<int64_t>(plan.batch_blocks));
}

template <typename Params>
void checked_launch(void (*kernel)(Params), const Params& params, const GatedSizes& s, const GatedPlan& plan,
                    size_t smem) {
  TORCH_CHECK(plan_fits(kernel, s, plan, smem), "rnnfast: the persistent CUDA path cannot hold this layer on the ",
              "device (B=", s.B, ", H=", s.H, ")");
  launch_persistent(kernel, params, persistent_grid(s, plan), kThreads, smem, plan.grid_sync);
}

}  // namespace

template <typename Cell>
bool gated_persistent_supported(const GatedSizes& s, at::ScalarType dtype, bool packed) {
  if (packed || dtype != at::kFloat || s.P != s.H || s.T == 0 || s.B == 0) return false;
  if (s.T > INT_MAX || s.B * s.D * s.G * s.H > INT_MAX) return false;
  const GatedPlan plan = plan_launch(s);
  return plan_fits(forward_kernel<Cell>(plan), s, plan, plan.forward_smem) &&
         plan_fits(backward_kernel<Cell>(plan), s, plan, plan.backward_smem);
}

template <typename Cell>
void gated_persistent_forward(GatedForwardBuffers& buf, const GatedSizes& s) {
  const c10::cuda::CUDAGuard guard(buf.output.device());
  const GatedPlan plan = plan_launch(s);
  const at::Tensor gates_x = whole_input_projection(buf, s);  // (T, B, D*G*H)
  checked_launch(forward_kernel<Cell>(plan), forward_params(buf, s, plan, gates_x), s, plan, plan.forward_smem);
}

template <typename Cell>
void gated_persistent_backward(GatedBackwardBuffers& buf, const GatedSizes& s) {
  const c10::cuda::CUDAGuard guard(buf.grad_h_seq.device());
  const GatedPlan plan = plan_launch(s);
  checked_launch(backward_kernel<Cell>(plan), backward_params(buf, s, plan), s, plan, plan.backward_smem);
}

template bool gated_persistent_supported<LstmCell>(const GatedSizes&, at::ScalarType, bool);
template bool gated_persistent_supported<GruCell>(const GatedSizes&, at::ScalarType, bool);
template void gated_persistent_forward<LstmCell>(GatedForwardBuffers&, const GatedSizes&);
template void gated_persistent_forward<GruCell>(GatedForwardBuffers&, const GatedSizes&);
template void gated_persistent_backward<LstmCell>(GatedBackwardBuffers&, const GatedSizes&);
template void gated_persistent_backward<GruCell>(GatedBackwardBuffers&, const GatedSizes&);

}  // namespace cuda
}  // namespace rnnfast
