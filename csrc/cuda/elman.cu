// The CUDA loop over time of an Elman layer, and the choice between its two paths:
//  - general: per step, one cuBLAS product for the recurrent term and one fused elementwise kernel (input
//    projection + recurrent term, activation, store, and h_n for rows that end at this step); any shape and
//    dtype, packed sequences included;
//  - persistent (elman_persistent.cu): one launch for the whole sequence, for small batches; and its cluster plan
//    (elman_cluster.cu), opt-in under RNNFAST_CUDA_PATH=cluster;
//  - fused step (elman_fused_step.cu): the general path's loop with one launch a step, opt-in under
//    RNNFAST_CUDA_PATH=fused.
// RNNFAST_CUDA_PATH=general|persistent|auto picks (path_setting.h; choose_path for what auto means here).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../cell_math.h"
#include "../elman_layer.h"
#include "cublas_gemm.h"
#include "elman_cluster.h"
#include "elman_fused_step.h"
#include "elman_persistent.h"
#include "launch.h"
#include "path_setting.h"

namespace rnnfast {
namespace cuda {
namespace {

// z: this step's slice of output (B rows of stride ld), holding x_t W_ih^T + b on entry and h_t on return;
// recurrent: (B, H) = h_{t-1} W_hh^T in acc_t. Rows >= rows are past their sequence's end; rows in
// [rows_next, rows) end at this step and also write h_n.
template <typename scalar_t, typename acc_t, Activation A>
__global__ void forward_step_kernel(scalar_t* __restrict__ z, const acc_t* __restrict__ recurrent,
                                    scalar_t* __restrict__ h_n, int64_t B, int64_t H, int64_t ld, int64_t rows,
                                    int64_t rows_next) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * H) return;
  const int64_t b = i / H, j = i % H;
  scalar_t* zb = z + b * ld + j;
  if (b >= rows) {
    *zb = scalar_t(0);
    return;
  }
  const scalar_t h = static_cast<scalar_t>(ActivationFn<A>::forward(static_cast<acc_t>(*zb) + recurrent[i]));
  *zb = h;
  if (b >= rows_next) h_n[i] = h;
}

// grad_z: this step's slice (B rows of stride ld), dL/dh_t from above on entry, dL/dz_t on return;
// h: the saved h_t; grad_h: (B, H), dL/dh_t from the step after.
template <typename scalar_t, typename acc_t, Activation A>
__global__ void backward_step_kernel(scalar_t* __restrict__ grad_z, const scalar_t* __restrict__ h,
                                     const acc_t* __restrict__ grad_h, int64_t B, int64_t H, int64_t ld,
                                     int64_t rows) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * H) return;
  const int64_t b = i / H, j = i % H;
  scalar_t* g = grad_z + b * ld + j;
  if (b >= rows) {
    *g = scalar_t(0);
    return;
  }
  const acc_t total = static_cast<acc_t>(*g) + grad_h[i];
  *g = static_cast<scalar_t>(ActivationFn<A>::backward_from_output(total, static_cast<acc_t>(h[b * ld + j])));
}

void general_forward_recurrence(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                                at::Tensor& h_n, const ElmanSizes& s, const int64_t* batch_sizes, bool relu) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "elman_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      const int64_t B = s.B, H = s.H, ld = s.D * s.H;
      // (D, B, H): each direction's h_{t-1} W_hh^T, reused by every step.
      at::Tensor recurrent = at::empty({s.D, B, H}, output.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      scalar_t* out = output.data_ptr<scalar_t>();
      const scalar_t* h0 = hx.const_data_ptr<scalar_t>();
      const scalar_t* w = weight_hh.const_data_ptr<scalar_t>();
      scalar_t* hn = h_n.data_ptr<scalar_t>();
      acc_t* rec = recurrent.data_ptr<acc_t>();
      const auto stream = c10::cuda::getCurrentCUDAStream();
      // Fetched once: setting the handle up per step would cost more host time than the step's launches.
      const cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
      const bool tf32 = at::globalContext().allowTF32CuDNN();
      for (int64_t i = 0; i < s.T; ++i) {
        for (int64_t d = 0; d < s.D; ++d) {
          const int64_t t = step_at(d, i, s.T), rows = rows_at(batch_sizes, t, B);
          const int64_t prev_rows = i == 0 ? 0 : rows_at(batch_sizes, step_at(d, i - 1, s.T), B);
          const int64_t rows_next = i + 1 == s.T ? 0 : rows_at(batch_sizes, step_at(d, i + 1, s.T), B);
          const int64_t continuing = std::min(rows, prev_rows);
          const scalar_t* wd = w + d * H * H;
          acc_t* rec_d = rec + d * B * H;
          // Rows that ran the previous step continue from its output; rows starting now start from hx.
          if (continuing > 0) {
            gemm_row_major<scalar_t, acc_t>(handle, tf32, true, continuing, H, H, out + step_at(d, i - 1, s.T) * B * ld + d * H,
                                            ld, wd, H, rec_d, H);
          }
          gemm_row_major<scalar_t, acc_t>(handle, tf32, true, rows - continuing, H, H, h0 + (d * B + continuing) * H, H, wd, H,
                                          rec_d + continuing * H, H);
          forward_step_kernel<scalar_t, acc_t, act><<<blocks_for(B * H), kElementwiseThreads, 0, stream>>>(
              out + t * B * ld + d * H, rec_d, hn + d * B * H, B, H, ld, rows, rows_next);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    });
  });
}

void general_backward_recurrence(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                                 const at::Tensor& weight_hh, const ElmanSizes& s, const int64_t* batch_sizes,
                                 bool relu) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_z.scalar_type(), "elman_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
      const int64_t B = s.B, H = s.H, ld = s.D * s.H;
      // (D, B, H): dL/dh of the step being processed, kept in acc_t across steps.
      at::Tensor grad_h_acc = grad_h.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
      scalar_t* gz = grad_z.data_ptr<scalar_t>();
      const scalar_t* out = output.const_data_ptr<scalar_t>();
      const scalar_t* w = weight_hh.const_data_ptr<scalar_t>();
      acc_t* gh = grad_h_acc.data_ptr<acc_t>();
      const auto stream = c10::cuda::getCurrentCUDAStream();
      const cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
      const bool tf32 = at::globalContext().allowTF32CuDNN();
      for (int64_t i = s.T - 1; i >= 0; --i) {
        for (int64_t d = 0; d < s.D; ++d) {
          const int64_t t = step_at(d, i, s.T), rows = rows_at(batch_sizes, t, B);
          scalar_t* gz_t = gz + t * B * ld + d * H;
          backward_step_kernel<scalar_t, acc_t, act><<<blocks_for(B * H), kElementwiseThreads, 0, stream>>>(
              gz_t, out + t * B * ld + d * H, gh + d * B * H, B, H, ld, rows);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          // dL/dh_{t-1} = dL/dz_t W_hh for the running rows; the others keep the gradient they hold.
          gemm_row_major<scalar_t, acc_t>(handle, tf32, false, rows, H, H, gz_t, ld, w + d * H * H, H, gh + d * B * H, H);
        }
      }
      grad_h.copy_(grad_h_acc);
    });
  });
}

enum class CudaPath { General, Persistent, Cluster, FusedStep };

// Under RNNFAST_CUDA_PATH=auto (path_setting.h), the persistent path where the H200 measurements of BENCHMARKS.md
// found it faster than the general path, i.e. the one-block plan up to batch 64, and the split plan for
// batch <= 4, or batch <= 16 at hidden <= 512. Both paths passed the GPU check on an H200 with this build's
// kernels (BENCHMARKS.md, "What was verified"). Float32 products follow torch.backends.cudnn.allow_tf32, as
// nn.RNN's cuDNN does.
CudaPath choose_path(const ElmanSizes& s, at::ScalarType dtype, bool packed) {
  const PathSetting setting = cuda_path_setting();
  if (setting == PathSetting::General) return CudaPath::General;
  if (setting == PathSetting::Cluster) {
    return cluster_supported(s, dtype, packed) ? CudaPath::Cluster : CudaPath::General;
  }
  if (setting == PathSetting::Fused) return fused_step_supported(s) ? CudaPath::FusedStep : CudaPath::General;
  if (!persistent_supported(s, dtype, packed)) return CudaPath::General;
  if (setting == PathSetting::Persistent) return CudaPath::Persistent;
  const bool pays = persistent_needs_grid_sync(s) ? (s.B <= 4 || (s.B <= 16 && s.H <= 512)) : s.B <= 64;
  return pays ? CudaPath::Persistent : CudaPath::General;
}

// The bias is always in output already: this backend leaves it to the projection (elman_layer.h).
void forward_recurrence_cuda(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                             const at::Tensor& /*bias*/, at::Tensor& h_n, const ElmanSizes& s,
                             const int64_t* batch_sizes, bool relu) {
  const c10::cuda::CUDAGuard guard(output.device());
  const CudaPath path = choose_path(s, output.scalar_type(), batch_sizes != nullptr);
  if (path == CudaPath::Cluster) {
    cluster_forward_recurrence(output, hx, weight_hh, h_n, s, relu);
  } else if (path == CudaPath::FusedStep) {
    fused_step_forward_recurrence(output, hx, weight_hh, h_n, s, batch_sizes, relu);
  } else if (path == CudaPath::Persistent) {
    persistent_forward_recurrence(output, hx, weight_hh, h_n, s, relu);
  } else {
    general_forward_recurrence(output, hx, weight_hh, h_n, s, batch_sizes, relu);
  }
}

void backward_recurrence_cuda(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                              const at::Tensor& weight_hh, const ElmanSizes& s, const int64_t* batch_sizes,
                              bool relu) {
  const c10::cuda::CUDAGuard guard(grad_z.device());
  const CudaPath path = choose_path(s, grad_z.scalar_type(), batch_sizes != nullptr);
  if (path == CudaPath::Cluster) {
    cluster_backward_recurrence(grad_z, grad_h, output, weight_hh, s, relu);
  } else if (path == CudaPath::FusedStep) {
    fused_step_backward_recurrence(grad_z, grad_h, output, weight_hh, s, batch_sizes, relu);
  } else if (path == CudaPath::Persistent) {
    persistent_backward_recurrence(grad_z, grad_h, output, weight_hh, s, relu);
  } else {
    general_backward_recurrence(grad_z, grad_h, output, weight_hh, s, batch_sizes, relu);
  }
}

std::tuple<at::Tensor, at::Tensor> elman_layer_forward_cuda(const at::Tensor& input, const at::Tensor& hx,
                                                            const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                                            const c10::optional<at::Tensor>& bias,
                                                            const c10::optional<at::Tensor>& batch_sizes, bool relu) {
  return elman_layer_forward_with(forward_recurrence_cuda, input, hx, weight_ih, weight_hh, bias, batch_sizes, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> elman_layer_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& output,
    const c10::optional<at::Tensor>& batch_sizes, bool relu) {
  return elman_layer_backward_with(backward_recurrence_cuda, grad_output, grad_h_n, input, hx, weight_ih, weight_hh,
                                   output, batch_sizes, relu);
}

// Whether elman_layer_forward would take a persistent plan (the cluster plan included) for this input and
// RNNFAST_CUDA_PATH; for tests and benchmarks.
bool elman_cuda_uses_persistent(const at::Tensor& input, const at::Tensor& weight_hh, bool packed) {
  const ElmanSizes s{input.size(0), input.size(1), input.size(2), weight_hh.size(1), weight_hh.size(0)};
  const c10::cuda::CUDAGuard guard(input.device());
  const CudaPath path = choose_path(s, input.scalar_type(), packed);
  return path == CudaPath::Persistent || path == CudaPath::Cluster;
}

}  // namespace
}  // namespace cuda
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CUDA, m) {
  m.impl("elman_layer_forward", &rnnfast::cuda::elman_layer_forward_cuda);
  m.impl("elman_layer_backward", &rnnfast::cuda::elman_layer_backward_cuda);
  m.impl("elman_cuda_uses_persistent", &rnnfast::cuda::elman_cuda_uses_persistent);
}
