// One step of the CPU loop over time for small hidden sizes, without BLAS: the per-step product and the
// activation in one pass over each batch row, with the product's columns accumulated in registers.
//
// Why: at hidden sizes up to a few hundred a BLAS call per step costs more in call overhead, packing and
// dispatch than its arithmetic (at batch 1, hidden 1 the call is nearly all of the step), and the activation
// would be a second pass. The kernels are compiled once per instruction set (AVX-512, AVX2+FMA, baseline x86-64)
// in small_step.cpp and picked at run time, so one build uses the widest vectors the CPU has.
#pragma once

#include <cstdint>
#include <vector>

#include "../cell_math.h"
#include "parallel_loops.h"

namespace rnnfast {
namespace cpu {

// Hidden sizes up to this use these kernels on Intel CPUs; larger ones the BLAS product (measured: BENCHMARKS.md).
constexpr int64_t kSmallStepMaxHidden = 256;

// Whether a loop over time runs its per-step products in the register-tiled kernels here (true) or in the BLAS
// that PyTorch links (false), for a layer of hidden size H. RNNFAST_CPU_STEP=fused or blas forces one, for tests
// and benchmarks; auto (the default) decides from measurements. On Intel CPUs MKL's product wins past
// intel_max_hidden (for the Elman step kSmallStepMaxHidden, or 512 when the loop splits its batch rows over
// threads; the gated cells pass kSmallStepMaxHidden only when the rows split, else 0: use_fused_step_for_groups).
// On other CPUs MKL runs a generic code path, and these kernels measured faster at every size, batch 1 to 64,
// hidden 64 to 1024 (an AMD EPYC with AVX-512: BENCHMARKS.md).
bool use_fused_step(int64_t H, int64_t intel_max_hidden);

// use_fused_step for a loop whose rows row_groups (splittable) put into `groups`: with intel_max_hidden split_max
// when the rows split over threads, else whole_max. A BLAS step runs all the rows in one loop, splitting each
// product over its own threads, so then `groups` collapses to one.
inline bool use_fused_step_for_groups(int64_t H, int64_t split_max, int64_t whole_max,
                                      std::vector<RowRange>& groups) {
  const bool fused = use_fused_step(H, groups.size() > 1 ? split_max : whole_max);
  if (!fused) groups = {{groups.front().begin, groups.back().end}};
  return fused;
}

// z[b] = act(z[b] + bias + h_prev[b] @ w_hh_t) for rows b < rows. z: rows of H at stride ld_z, holding x_t W_ih^T
// on entry (and the bias, where bias is nullptr); bias: (H) or nullptr; h_prev: rows of H at stride ld_h; w_hh_t:
// W_hh transposed, (H, H) row-major (k-major), so each input unit's weights to all outputs are contiguous.
template <typename scalar_t, Activation A>
void forward_step_small(scalar_t* z, int64_t ld_z, const scalar_t* bias, const scalar_t* h_prev, int64_t ld_h,
                        const scalar_t* w_hh_t, int64_t H, int64_t rows);

// For rows b < rows: grad_z[b] = act'(grad_z[b] + grad_h[b]) given the saved h[b], then grad_h[b] = grad_z[b] @
// w_hh (dL/dh_{t-1}). grad_z and h: rows of H at stride ld; grad_h: rows of H, contiguous; w_hh: (H, H)
// row-major as stored, so each output unit's weights from all inputs are contiguous.
template <typename scalar_t, Activation A>
void backward_step_small(scalar_t* grad_z, const scalar_t* h, int64_t ld, scalar_t* grad_h, const scalar_t* w_hh,
                         int64_t H, int64_t rows);

// The per-step product of the gated cells' loops, in the register tiles of the kernels above, on weights packed
// once per call: a (K, N) matrix becomes its column blocks of one tile's width, each a contiguous (K, width)
// panel, the last padded with zeros. The step then reads the weights in memory order; read in place, a block's
// rows lie N values apart (at N = 4096, one page each), which defeats the prefetcher and the TLB.
// Values in the packed form of a (K, N) matrix.
template <typename scalar_t>
int64_t packed_size(int64_t K, int64_t N);
// dst (packed_size(K, N) values) = the packed form of M, (K, N) row-major at stride ldm.
template <typename scalar_t>
void pack_weights(scalar_t* dst, const scalar_t* M, int64_t ldm, int64_t K, int64_t N);
// C[r] = A[r] @ M for rows r < rows, added onto C[r] when accumulate. A: rows of K at stride lda; packed: M as
// pack_weights left it; C: rows of N at stride ldc.
template <typename scalar_t>
void step_product(scalar_t* C, int64_t ldc, const scalar_t* A, int64_t lda, const scalar_t* packed, int64_t rows,
                  int64_t K, int64_t N, bool accumulate);

// The activation passes of the BLAS path (hidden sizes above kSmallStepMaxHidden), compiled per instruction set
// like the kernels above: the extension's own baseline build would run them 4 lanes wide, which at batch 16,
// hidden 512 was a fifth of the step.
// z[b] = act(z[b] + bias) for rows b < rows; z: rows of H at stride ld; bias: (H), or nullptr for none.
template <typename scalar_t, Activation A>
void activate_rows(scalar_t* z, int64_t ld, const scalar_t* bias, int64_t H, int64_t rows);

// grad_z[b] = act'(grad_z[b] + grad_h[b]) given the saved h[b], for rows b < rows: the first half of
// backward_step_small. grad_z and h: rows of H at stride ld; grad_h: rows of H, contiguous.
template <typename scalar_t, Activation A>
void activation_backward_rows(scalar_t* grad_z, const scalar_t* h, int64_t ld, const scalar_t* grad_h, int64_t H,
                              int64_t rows);

}  // namespace cpu
}  // namespace rnnfast
