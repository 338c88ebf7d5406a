// The recurrent weights transposed once per call, for the loops' per-step products, which read W^T stored
// contiguous (BLAS runs h @ W^T from that layout up to twice as fast as from W's own at one step's row count, and
// the register tiles read k-major). Why not at::Tensor::transpose(1, 2).contiguous(): for a (D, R, C) weight
// that copy takes TensorIterator's generic strided path, 5.5x slower than a 2-D .t().contiguous() (38 ms
// against 7 for one 4096 x 1024 float weight, one thread, Intel Xeon with AVX-512), and at hidden 1024 that was a
// third of an LSTM layer's forward. Copied tile by tile, both sides of a tile stay in L1.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace rnnfast {
namespace cpu {

// Side of the square tiles: two (kTransposeTile x kTransposeTile) float64 tiles fit in a 32 KiB L1 with room.
constexpr int64_t kTransposeTile = 32;

// dst (cols, rows) = src (rows, cols) transposed, both contiguous, for the source rows [row_begin, row_end).
template <typename scalar_t>
void transpose_rows(scalar_t* dst, const scalar_t* src, int64_t rows, int64_t cols, int64_t row_begin,
                    int64_t row_end) {
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kTransposeTile) {
    const int64_t r1 = std::min(r0 + kTransposeTile, row_end);
    for (int64_t c0 = 0; c0 < cols; c0 += kTransposeTile) {
      const int64_t c1 = std::min(c0 + kTransposeTile, cols);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
    }
  }
}

// dst (cols, rows) = src (rows, cols) transposed, both contiguous.
template <typename scalar_t>
void transpose_into(scalar_t* dst, const scalar_t* src, int64_t rows, int64_t cols) {
  transpose_rows(dst, src, rows, cols, 0, rows);
}

// (D, C, R) contiguous = the (D, R, C) weights with each matrix transposed; the tiles' rows shared out among the
// threads (at::parallel_for runs them inline inside a parallel region).
inline at::Tensor transposed_weights(const at::Tensor& weights) {
  TORCH_CHECK(weights.dim() == 3, "rnnfast: expected weights (D, R, C), got ", weights.sizes());
  const at::Tensor w = weights.contiguous();
  const int64_t D = w.size(0), R = w.size(1), C = w.size(2);
  at::Tensor out = at::empty({D, C, R}, w.options());  // (D, C, R)
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "transposed_weights", [&] {
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    const int64_t tiles_per_matrix = (R + kTransposeTile - 1) / kTransposeTile;
    // A grain of about 256 KiB of weights per task: below it a thread's start costs more than the copy.
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, kTransposeTile * C));
    at::parallel_for(0, D * tiles_per_matrix, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t d = i / tiles_per_matrix, r0 = (i % tiles_per_matrix) * kTransposeTile;
        transpose_rows(dst + d * R * C, src + d * R * C, R, C, r0, std::min(r0 + kTransposeTile, R));
      }
    });
  });
  return out;
}

}  // namespace cpu
}  // namespace rnnfast
