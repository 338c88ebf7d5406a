// The floor a CPU loop over time is measured against: T bare per-step products (B x H) @ (N x H)^T through the
// BLAS routine the loops call where they do not use their own register tiles (small_step.h), with nothing else
// in the loop (no activation, no bias, no bookkeeping). The
// Elman loop's product is N = H; a gated cell's forward product has N = G*H, and its backward product
// dL/dz (B x G*H) @ W_hh is this one with the weight W_hh^T.
// The weight is transposed once before the loop, as the loops do: BLAS runs h @ (W^T stored contiguous)
// up to twice as fast as h @ W^T read from W's own layout, and a floor must be the faster of the two.
// Every step multiplies the same h0, so the values neither grow nor decay into denormals over long T, which
// would change the product's speed, and no step waits for the previous one's result beyond what BLAS does.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "blas.h"
#include "transpose.h"

namespace rnnfast {
namespace cpu {
namespace {

at::Tensor recurrence_floor_cpu(const at::Tensor& h0, const at::Tensor& weight_hh, int64_t steps) {
  TORCH_CHECK(h0.dim() == 2 && weight_hh.dim() == 2 && h0.size(1) == weight_hh.size(1),
              "rnnfast: expected h0 (B, H) and weight_hh (N, H), got ", h0.sizes(), " and ", weight_hh.sizes());
  TORCH_CHECK(h0.scalar_type() == weight_hh.scalar_type() &&
                  (h0.scalar_type() == at::kFloat || h0.scalar_type() == at::kDouble),
              "rnnfast: expected float32 or float64 h0 and weight_hh of one dtype, got ", h0.scalar_type(), " and ",
              weight_hh.scalar_type());
  TORCH_CHECK(steps >= 0, "rnnfast: expected steps >= 0, got ", steps);
  const int64_t B = h0.size(0), H = h0.size(1), N = weight_hh.size(0);
  const at::Tensor h = h0.contiguous();
  const at::Tensor w_t = transposed_weights(weight_hh.unsqueeze(0));  // (1, H, N): W_hh^T
  at::Tensor out = at::empty({steps, B, N}, h0.options());  // (steps, B, N): one product per step
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "recurrence_floor_cpu", [&] {
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    const scalar_t* wp = w_t.const_data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for (int64_t t = 0; t < steps; ++t) gemm_row_major<scalar_t>(false, B, N, H, hp, H, wp, N, 0, op + t * B * N, N);
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CPU, m) { m.impl("recurrence_floor", &rnnfast::cpu::recurrence_floor_cpu); }
