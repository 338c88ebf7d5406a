// The CUDA loop over time of a gated layer (LSTM, GRU), general path: per step and direction one cuBLAS product
// for the recurrent term and one fused pointwise kernel running the cell description of gate_math.h (gates,
// state update, saved quantities, and the zeros past a row's length), into buffers allocated once per call;
// float32 and float64, with 16-bit layers run on float32 copies (csrc/widened.h). The persistent path
// (gated_persistent.cu) runs under RNNFAST_CUDA_PATH=persistent only, until a GPU check has verified it; under
// RNNFAST_CUDA_PATH=fused the per-step products run on rnnfast's tiles instead of cuBLAS (step_gemm.h), likewise
// opt-in.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../gate_math.h"
#include "../gated_layer.h"
#include "../widened.h"
#include "gated_persistent.h"
#include "launch.h"
#include "path_setting.h"
#include "step_gemm.h"

namespace rnnfast {
namespace cuda {
namespace {

// One thread per (row b, unit j) of a step. Rows >= rows are past their sequence's end: their output and
// workspace are zeroed and their h and c left as they are.
template <typename Cell, typename scalar_t>
__global__ void forward_cells_kernel(const scalar_t* __restrict__ gates_x, int64_t ld_gates,
                                     const scalar_t* __restrict__ gates_h, const scalar_t* __restrict__ bias_h,
                                     scalar_t* __restrict__ ws, int64_t ld_ws, scalar_t* h, scalar_t* c,
                                     scalar_t* m, scalar_t* __restrict__ out, int64_t ld_out, int64_t B, int64_t H,
                                     int64_t P, int64_t rows) {
  // gates_x, ws, out: this step's slices, row b at b * ld; gates_h: (B, G*H); h: (B, P); c, m: (B, H) or null.
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * H) return;
  const int64_t b = i / H, j = i % H;
  if (b >= rows) {
    for (int64_t k = 0; k < Cell::spec.workspace_units; ++k) ws[b * ld_ws + k * H + j] = scalar_t(0);
    if (j < P) out[b * ld_out + j] = scalar_t(0);
    return;
  }
  scalar_t h_prev = scalar_t(0);
  if constexpr (Cell::spec.direct_hidden_path) h_prev = h[b * P + j];
  const scalar_t value = Cell::forward(gates_x + b * ld_gates, gates_h + b * Cell::spec.gates * H, bias_h, h_prev,
                                       c ? c + b * H : nullptr, ws + b * ld_ws, j, H);
  if (m) {
    m[b * H + j] = value;  // projected to h by the product after this kernel
  } else {
    h[b * P + j] = value;
    out[b * ld_out + j] = value;
  }
}

// After the projection's product: h_t (rows, P) into the step's output.
template <typename scalar_t>
__global__ void store_projected_kernel(const scalar_t* __restrict__ h, scalar_t* __restrict__ out, int64_t ld_out,
                                       int64_t P, int64_t rows) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * P) return;
  out[(i / P) * ld_out + i % P] = h[i];
}

// dL/dh_t = the output's gradient + the carried one, in place in grad_h_seq's step slice; zero past a row's end.
template <typename scalar_t>
__global__ void add_carried_kernel(scalar_t* __restrict__ grad, int64_t ld, const scalar_t* __restrict__ carried,
                                   int64_t B, int64_t P, int64_t rows) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * P) return;
  const int64_t b = i / P, j = i % P;
  grad[b * ld + j] = b < rows ? grad[b * ld + j] + carried[i] : scalar_t(0);
}

template <typename Cell, typename scalar_t>
__global__ void backward_cells_kernel(const scalar_t* __restrict__ grad_out, int64_t ld_grad_out,
                                      const scalar_t* __restrict__ ws, int64_t ld_ws,
                                      const scalar_t* __restrict__ prev_h, int64_t ld_prev, scalar_t* grad_gates_x,
                                      scalar_t* grad_gates_h, int64_t ld_gates, scalar_t* grad_c,
                                      scalar_t* grad_h_direct, int64_t B, int64_t H, int64_t P, int64_t rows) {
  // grad_out: dL/d(cell output) rows; grad_gates_h may equal grad_gates_x; grad_c (B, H) or null;
  // grad_h_direct (B, P).
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * H) return;
  const int64_t b = i / H, j = i % H;
  if (b >= rows) {
    for (int64_t k = 0; k < Cell::spec.gates; ++k) {
      grad_gates_x[b * ld_gates + k * H + j] = scalar_t(0);
      grad_gates_h[b * ld_gates + k * H + j] = scalar_t(0);
    }
    return;
  }
  scalar_t h_prev = scalar_t(0);
  if constexpr (Cell::spec.direct_hidden_path) h_prev = prev_h[b * ld_prev + j];
  Cell::backward(grad_out[b * ld_grad_out + j], grad_c ? grad_c + b * H : nullptr, ws + b * ld_ws, h_prev,
                 grad_gates_x + b * ld_gates, grad_gates_h + b * ld_gates, grad_h_direct + b * P, j, H);
}

// A weight (D, n, k) transposed to (D, k, n) for the tiled products, which read their weight along its rows; an
// undefined tensor for cuBLAS, which reads it in place.
template <typename scalar_t>
at::Tensor transposed_for(const StepGemm<scalar_t>& product, const at::Tensor& weight) {
  return product.tiled() ? weight.transpose(1, 2).contiguous() : at::Tensor();
}

// Direction d's slice of a (D, ...) tensor, or null for an undefined one.
template <typename scalar_t>
const scalar_t* row_of(const at::Tensor& t, int64_t d) {
  return t.defined() ? t.const_data_ptr<scalar_t>() + d * (t.numel() / t.size(0)) : nullptr;
}

// The persistent path only where asked for (RNNFAST_CUDA_PATH=persistent): under auto the general path, as the
// persistent gated kernels have not been through a GPU check yet.
template <typename Cell>
bool use_persistent(const GatedSizes& s, at::ScalarType dtype, bool packed) {
  return cuda_path_setting() == PathSetting::Persistent && gated_persistent_supported<Cell>(s, dtype, packed);
}

template <typename Cell>
void forward_recurrence_cuda(GatedForwardBuffers& buf, const GatedSizes& s, const int64_t* batch_sizes) {
  const c10::cuda::CUDAGuard guard(buf.output.device());
  if (use_persistent<Cell>(s, buf.output.scalar_type(), batch_sizes != nullptr)) {
    gated_persistent_forward<Cell>(buf, s);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(buf.output.scalar_type(), "gated_forward_cuda", [&] {
    const int64_t B = s.B, H = s.H, P = s.P, GH = s.G * s.H, WH = s.W * s.H;
    const int64_t ld_gates = s.D * GH, ld_out = s.D * P, ld_ws = s.D * WH, ws_step = workspace_step_stride(buf, s);
    const at::Tensor gates_x = whole_input_projection(buf, s);  // (T, B, D*G*H)
    // Allocated once per call, never inside the loop over time.
    at::Tensor gates_h = at::empty({s.D, B, GH}, buf.output.options());  // (D, B, G*H)
    const bool projected = buf.weight_hr.defined();
    at::Tensor m = projected ? at::empty({s.D, B, H}, buf.output.options()) : at::Tensor();  // (D, B, H)
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const StepGemm<scalar_t> product(cuda_path_setting() == PathSetting::Fused);
    // The tiles' operands: W_hh^T (D, P, G*H) and W_hr^T (D, H, P).
    const at::Tensor weight_hh_t = transposed_for(product, buf.weight_hh);
    const at::Tensor weight_hr_t = projected ? transposed_for(product, buf.weight_hr) : at::Tensor();
    for (int64_t i = 0; i < s.T; ++i) {
      for (int64_t d = 0; d < s.D; ++d) {
        const int64_t t = step_at(d, i, s.T), rows = rows_at(batch_sizes, t, B);
        scalar_t* h = buf.h.data_ptr<scalar_t>() + d * B * P;
        scalar_t* gh = gates_h.data_ptr<scalar_t>() + d * B * GH;
        scalar_t* m_d = projected ? m.data_ptr<scalar_t>() + d * B * H : nullptr;
        scalar_t* out_t = buf.output.data_ptr<scalar_t>() + t * B * ld_out + d * P;
        product.times_transposed(rows, GH, P, h, P, buf.weight_hh.data_ptr<scalar_t>() + d * GH * P, P,
                                 row_of<scalar_t>(weight_hh_t, d), gh, GH);
        forward_cells_kernel<Cell, scalar_t><<<blocks_for(B * H), kElementwiseThreads, 0, stream>>>(
            gates_x.data_ptr<scalar_t>() + t * B * ld_gates + d * GH, ld_gates, gh,
            buf.bias_h.defined() ? buf.bias_h.data_ptr<scalar_t>() + d * GH : nullptr,
            buf.workspace.data_ptr<scalar_t>() + t * ws_step + d * WH, ld_ws, h,
            buf.c.defined() ? buf.c.data_ptr<scalar_t>() + d * B * H : nullptr, m_d, out_t, ld_out, B, H, P, rows);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (projected) {
          product.times_transposed(rows, P, H, m_d, H, buf.weight_hr.data_ptr<scalar_t>() + d * P * H, H,
                                   row_of<scalar_t>(weight_hr_t, d), h, P);
          store_projected_kernel<scalar_t><<<blocks_for(rows * P), kElementwiseThreads, 0, stream>>>(h, out_t, ld_out,
                                                                                                  P, rows);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    }
  });
}

template <typename Cell>
void backward_recurrence_cuda(GatedBackwardBuffers& buf, const GatedSizes& s, const int64_t* batch_sizes) {
  const c10::cuda::CUDAGuard guard(buf.grad_h_seq.device());
  if (use_persistent<Cell>(s, buf.grad_h_seq.scalar_type(), batch_sizes != nullptr)) {
    gated_persistent_backward<Cell>(buf, s);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(buf.grad_h_seq.scalar_type(), "gated_backward_cuda", [&] {
    const int64_t B = s.B, H = s.H, P = s.P, GH = s.G * s.H, WH = s.W * s.H;
    const int64_t ld_gates = s.D * GH, ld_out = s.D * P, ld_ws = s.D * WH;
    const bool projected = buf.weight_hr.defined();
    at::Tensor grad_m = projected ? at::empty({s.D, B, H}, buf.grad_h_seq.options()) : at::Tensor();  // (D, B, H)
    const bool separate = buf.grad_gates_h.defined();
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const StepGemm<scalar_t> product(cuda_path_setting() == PathSetting::Fused);
    const scalar_t beta = Cell::spec.direct_hidden_path ? 1 : 0;
    for (int64_t i = s.T - 1; i >= 0; --i) {
      for (int64_t d = 0; d < s.D; ++d) {
        const int64_t t = step_at(d, i, s.T), rows = rows_at(batch_sizes, t, B);
        scalar_t* dh_t = buf.grad_h_seq.data_ptr<scalar_t>() + t * B * ld_out + d * P;
        scalar_t* carry_h = buf.grad_h.data_ptr<scalar_t>() + d * B * P;
        scalar_t* dgx_t = buf.grad_gates_x.data_ptr<scalar_t>() + t * B * ld_gates + d * GH;
        scalar_t* dgh_t = separate ? buf.grad_gates_h.data_ptr<scalar_t>() + t * B * ld_gates + d * GH : dgx_t;
        scalar_t* grad_m_d = projected ? grad_m.data_ptr<scalar_t>() + d * B * H : nullptr;
        add_carried_kernel<scalar_t><<<blocks_for(B * P), kElementwiseThreads, 0, stream>>>(dh_t, ld_out, carry_h,
                                                                                              B, P, rows);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (projected) {
          product.times(rows, H, P, dh_t, ld_out, buf.weight_hr.data_ptr<scalar_t>() + d * P * H, H, grad_m_d, H);
        }
        backward_cells_kernel<Cell, scalar_t><<<blocks_for(B * H), kElementwiseThreads, 0, stream>>>(
            projected ? grad_m_d : dh_t, projected ? H : ld_out,
            buf.workspace.data_ptr<scalar_t>() + t * B * ld_ws + d * WH, ld_ws,
            buf.prev_h.data_ptr<scalar_t>() + t * B * ld_out + d * P, ld_out, dgx_t, dgh_t, ld_gates,
            buf.grad_c.defined() ? buf.grad_c.data_ptr<scalar_t>() + d * B * H : nullptr, carry_h, B, H, P, rows);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        // dL/dh_{t-1} for the running rows: the recurrent product, added to the direct part where the cell wrote
        // one. The other rows keep the gradient they hold.
        product.times(rows, P, GH, dgh_t, ld_gates, buf.weight_hh.data_ptr<scalar_t>() + d * GH * P, P, carry_h, P,
                      beta);
      }
    }
  });
}

// Which path a forward of `cell` ("LSTM" or "GRU") would take for this input (T, B, I) and weight_hh
// (D, G*H, P) under the current RNNFAST_CUDA_PATH; for tests and benchmarks.
bool gated_cuda_uses_persistent(c10::string_view cell, const at::Tensor& input, const at::Tensor& weight_hh,
                                bool packed) {
  const bool lstm = cell == "LSTM";
  TORCH_CHECK(lstm || cell == "GRU", "rnnfast: expected cell LSTM or GRU, got ", cell);
  const CellSpec& spec = lstm ? LstmCell::spec : GruCell::spec;
  TORCH_CHECK(input.dim() == 3 && weight_hh.dim() == 3 && weight_hh.size(1) % spec.gates == 0,
              "rnnfast: expected input (T, B, I) and weight_hh (D, ", spec.gates, "*H, P), got ", input.sizes(),
              " and ", weight_hh.sizes());
  const int64_t H = weight_hh.size(1) / spec.gates;
  const GatedSizes s{input.size(0), input.size(1), input.size(2), H, weight_hh.size(2), weight_hh.size(0),
                     spec.gates, spec.workspace_units};
  const c10::cuda::CUDAGuard guard(input.device());
  // 16-bit layers reach the loops widened to float32.
  const at::ScalarType dtype = widening::is_16bit(input) ? at::kFloat : input.scalar_type();
  return lstm ? use_persistent<LstmCell>(s, dtype, packed) : use_persistent<GruCell>(s, dtype, packed);
}

}  // namespace
}  // namespace cuda
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CUDA, m) {
  using rnnfast::GruCell, rnnfast::LstmCell, rnnfast::Widened;
  using rnnfast::cuda::backward_recurrence_cuda, rnnfast::cuda::forward_recurrence_cuda;
  // 16-bit layers run on float32 copies (csrc/widened.h).
  m.impl("lstm_layer_forward", &Widened<&rnnfast::lstm_layer_forward_op<forward_recurrence_cuda<LstmCell>>>::call);
  m.impl("lstm_layer_backward", &Widened<&rnnfast::lstm_layer_backward_op<backward_recurrence_cuda<LstmCell>>>::call);
  m.impl("gru_layer_forward", &Widened<&rnnfast::gru_layer_forward_op<forward_recurrence_cuda<GruCell>>>::call);
  m.impl("gru_layer_backward", &Widened<&rnnfast::gru_layer_backward_op<backward_recurrence_cuda<GruCell>>>::call);
  m.impl("gated_cuda_uses_persistent", &rnnfast::cuda::gated_cuda_uses_persistent);
}
