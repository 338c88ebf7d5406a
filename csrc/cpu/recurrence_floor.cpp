// The floor a CPU loop over time is measured against: T bare per-step products (B x H) @ (H x H)^T through the
// same BLAS routine the Elman loop calls, with nothing else in the loop (no activation, no bias, no bookkeeping).
// The weight is transposed once before the loop, as the Elman loop does: BLAS runs h @ (W^T stored contiguous)
// up to twice as fast as h @ W^T read from W's own layout, and a floor must be the faster of the two.
// Every step multiplies the same h0, so the values neither grow nor decay into denormals over long T, which
// would change the product's speed, and no step waits for the previous one's result beyond what BLAS does.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "blas.h"

namespace rnnfast {
namespace cpu {
namespace {

at::Tensor recurrence_floor_cpu(const at::Tensor& h0, const at::Tensor& weight_hh, int64_t steps) {
  TORCH_CHECK(h0.dim() == 2 && weight_hh.dim() == 2 && weight_hh.size(0) == weight_hh.size(1) &&
                  h0.size(1) == weight_hh.size(0),
              "rnnfast: expected h0 (B, H) and weight_hh (H, H), got ", h0.sizes(), " and ", weight_hh.sizes());
  TORCH_CHECK(h0.scalar_type() == weight_hh.scalar_type() &&
                  (h0.scalar_type() == at::kFloat || h0.scalar_type() == at::kDouble),
              "rnnfast: expected float32 or float64 h0 and weight_hh of one dtype, got ", h0.scalar_type(), " and ",
              weight_hh.scalar_type());
  TORCH_CHECK(steps >= 0, "rnnfast: expected steps >= 0, got ", steps);
  const int64_t B = h0.size(0), H = h0.size(1);
  const at::Tensor h = h0.contiguous(), w_t = weight_hh.t().contiguous();  // w_t: (H, H), W_hh^T
  at::Tensor out = at::empty({steps, B, H}, h0.options());  // (steps, B, H): one product per step
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "recurrence_floor_cpu", [&] {
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    const scalar_t* wp = w_t.const_data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for (int64_t t = 0; t < steps; ++t) gemm_row_major<scalar_t>(false, B, H, H, hp, H, wp, H, 0, op + t * B * H, H);
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CPU, m) { m.impl("recurrence_floor", &rnnfast::cpu::recurrence_floor_cpu); }
