// The small-hidden-size step kernels of small_step.h, compiled per instruction set and dispatched at run time.
#include "small_step.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "simd_target.h"

namespace rnnfast {
namespace cpu {
namespace {

// The register tile of the product: kRows batch rows x kColumns output columns, accumulated over all H inputs
// with each weight vector loaded once per tile and used for every row in it. 4 x 64 floats is 16 AVX-512
// registers of the 32 (with AVX2 or SSE the compiler spills some; those machines get a smaller benefit).
constexpr int64_t kRows = 4;
template <typename scalar_t>
constexpr int64_t kColumns = 256 / sizeof(scalar_t);

// acc[r][0:width] += in[r][0:K] @ m[0:K, 0:width] for r < rows (rows <= kRows), m row-major with stride ld_m.
// rows and width are either int64_t or std::integral_constant: passed as constants, the loops have fixed trip
// counts and unroll into whole vector registers. The build compiles with -ffp-contract=off (so that the gated
// cells' pointwise variants agree bit for bit), which would split every multiply-add here in two; the variants
// with FMA hardware (use_fma) ask for the fused instruction explicitly.
template <bool use_fma, typename scalar_t, typename Rows, typename Width>
__attribute__((always_inline)) inline void accumulate_tile(scalar_t (&acc)[kRows][kColumns<scalar_t>], Rows rows,
                                                           Width width, const scalar_t* in, int64_t ld_in,
                                                           const scalar_t* m, int64_t ld_m, int64_t K) {
  for (int64_t k = 0; k < K; ++k) {
    const scalar_t* row = m + k * ld_m;
    for (int64_t r = 0; r < rows; ++r) {
      const scalar_t s = in[r * ld_in + k];
      for (int64_t i = 0; i < width; ++i) acc[r][i] = use_fma ? std::fma(s, row[i], acc[r][i]) : acc[r][i] + s * row[i];
    }
  }
}

template <int64_t n>
using Constant = std::integral_constant<int64_t, n>;

// acc += in (rows x K) @ m[0:K, 0:width] for one tile, m row-major at stride ld_m, unrolled when the tile is full
// width and has kRows rows or one, or with every_row_count any number of rows. Why the choice: the Elman steps
// at batch 2-3 (or groups of rows that the threads' split, parallel_loops.h, leaves with 2 or 3) took the
// generic loop at more than twice the time per row (batch 3, hidden 256: about 2x faster unrolled), where the gated
// cells' products ran about 10% slower unrolled at 2 and 3 rows (GRU, hidden 64-256: 0.89x-0.92x).
template <bool use_fma, bool every_row_count, typename scalar_t>
__attribute__((always_inline)) inline void product_tile(scalar_t (&acc)[kRows][kColumns<scalar_t>], int64_t rows,
                                                        int64_t width, const scalar_t* in, int64_t ld_in,
                                                        const scalar_t* m, int64_t ld_m, int64_t K) {
  constexpr int64_t columns = kColumns<scalar_t>;
  static_assert(kRows == 4, "the cases below unroll each row count up to kRows");
  const Constant<columns> full;
  if (width == columns && rows == 4) return accumulate_tile<use_fma>(acc, Constant<4>{}, full, in, ld_in, m, ld_m, K);
  if (width == columns && rows == 1) return accumulate_tile<use_fma>(acc, Constant<1>{}, full, in, ld_in, m, ld_m, K);
  if (every_row_count && width == columns && rows == 3) {
    return accumulate_tile<use_fma>(acc, Constant<3>{}, full, in, ld_in, m, ld_m, K);
  }
  if (every_row_count && width == columns && rows == 2) {
    return accumulate_tile<use_fma>(acc, Constant<2>{}, full, in, ld_in, m, ld_m, K);
  }
  accumulate_tile<use_fma>(acc, rows, width, in, ld_in, m, ld_m, K);
}

// step_product on packed weights (small_step.h): each column block's panel is (K, columns) contiguous, padded
// to the full width, so every tile takes the unrolled path on the columns and only the copy out is cut short.
template <bool use_fma, typename scalar_t>
__attribute__((always_inline)) inline void product_body(scalar_t* C, int64_t ldc, const scalar_t* A, int64_t lda,
                                                        const scalar_t* packed, int64_t rows, int64_t K, int64_t N,
                                                        bool accumulate) {
  constexpr int64_t columns = kColumns<scalar_t>;
  for (int64_t j0 = 0; j0 < N; j0 += columns) {
    const int64_t width = std::min(columns, N - j0);
    const scalar_t* panel = packed + j0 * K;  // (K, columns)
    for (int64_t b0 = 0; b0 < rows; b0 += kRows) {
      const int64_t tile_rows = std::min(kRows, rows - b0);
      scalar_t acc[kRows][columns] = {};  // (kRows, columns): this tile of C
      if (accumulate) {
        for (int64_t r = 0; r < tile_rows; ++r) std::copy_n(C + (b0 + r) * ldc + j0, width, acc[r]);
      }
      product_tile<use_fma, false>(acc, tile_rows, columns, A + b0 * lda, lda, panel, columns, K);
      for (int64_t r = 0; r < tile_rows; ++r) std::copy_n(acc[r], width, C + (b0 + r) * ldc + j0);
    }
  }
}

// The Elman steps walk the output by column blocks and the row tiles within each, as product_body does, so that a
// block of the weights is reused from cache by every row tile (measured no slower than row tiles outside).
template <bool use_fma, typename scalar_t, Activation A>
__attribute__((always_inline)) inline void forward_body(scalar_t* z, int64_t ld_z, const scalar_t* bias,
                                                        const scalar_t* h_prev, int64_t ld_h, const scalar_t* w_t,
                                                        int64_t H, int64_t rows) {
  constexpr int64_t columns = kColumns<scalar_t>;
  for (int64_t j0 = 0; j0 < H; j0 += columns) {
    const int64_t width = std::min(columns, H - j0);
    for (int64_t b0 = 0; b0 < rows; b0 += kRows) {
      const int64_t tile_rows = std::min(kRows, rows - b0);
      scalar_t acc[kRows][columns];  // (kRows, columns): pre-activations of this tile
      for (int64_t r = 0; r < tile_rows; ++r) {
        const scalar_t* zr = z + (b0 + r) * ld_z + j0;
        if (bias) {
          for (int64_t i = 0; i < width; ++i) acc[r][i] = zr[i] + bias[j0 + i];
        } else {
          std::copy_n(zr, width, acc[r]);
        }
      }
      product_tile<use_fma, true>(acc, tile_rows, width, h_prev + b0 * ld_h, ld_h, w_t + j0, H, H);
      for (int64_t r = 0; r < tile_rows; ++r) {
        scalar_t* zr = z + (b0 + r) * ld_z + j0;
        for (int64_t i = 0; i < width; ++i) zr[i] = ActivationFn<A>::forward(acc[r][i]);
      }
    }
  }
}

template <typename scalar_t, Activation A>
__attribute__((always_inline)) inline void activate_body(scalar_t* z, int64_t ld, const scalar_t* bias, int64_t H,
                                                         int64_t rows) {
  for (int64_t b = 0; b < rows; ++b) {
    scalar_t* zb = z + b * ld;
    if (bias) {
      for (int64_t j = 0; j < H; ++j) zb[j] = ActivationFn<A>::forward(zb[j] + bias[j]);
    } else {
      for (int64_t j = 0; j < H; ++j) zb[j] = ActivationFn<A>::forward(zb[j]);
    }
  }
}

template <typename scalar_t, Activation A>
__attribute__((always_inline)) inline void activation_backward_body(scalar_t* grad_z, const scalar_t* h, int64_t ld,
                                                                    const scalar_t* grad_h, int64_t H, int64_t rows) {
  for (int64_t b = 0; b < rows; ++b) {
    scalar_t* gz = grad_z + b * ld;
    const scalar_t* hb = h + b * ld;
    const scalar_t* gh = grad_h + b * H;
    for (int64_t j = 0; j < H; ++j) gz[j] = ActivationFn<A>::backward_from_output(gz[j] + gh[j], hb[j]);
  }
}

template <bool use_fma, typename scalar_t, Activation A>
__attribute__((always_inline)) inline void backward_body(scalar_t* grad_z, const scalar_t* h, int64_t ld,
                                                         scalar_t* grad_h, const scalar_t* w, int64_t H,
                                                         int64_t rows) {
  constexpr int64_t columns = kColumns<scalar_t>;
  activation_backward_body<scalar_t, A>(grad_z, h, ld, grad_h, H, rows);
  for (int64_t k0 = 0; k0 < H; k0 += columns) {
    const int64_t width = std::min(columns, H - k0);
    for (int64_t b0 = 0; b0 < rows; b0 += kRows) {
      const int64_t tile_rows = std::min(kRows, rows - b0);
      scalar_t acc[kRows][columns] = {};  // (kRows, columns): dL/dh_{t-1} of this tile
      product_tile<use_fma, true>(acc, tile_rows, width, grad_z + b0 * ld, ld, w + k0, H, H);
      for (int64_t r = 0; r < tile_rows; ++r) std::copy_n(acc[r], width, grad_h + (b0 + r) * H + k0);
    }
  }
}

// One copy of each kernel per instruction set (simd_target.h): AVX-512 and AVX2 with FMA, and the baseline.
#define RNNFAST_SMALL_STEP_KERNELS(SUFFIX, TARGET_ATTRIBUTE, USE_FMA)                                              \
  template <typename scalar_t, Activation A>                                                                      \
  TARGET_ATTRIBUTE void forward_##SUFFIX(scalar_t* z, int64_t ld_z, const scalar_t* bias, const scalar_t* h_prev, \
                                         int64_t ld_h, const scalar_t* w_t, int64_t H, int64_t rows) {            \
    forward_body<USE_FMA, scalar_t, A>(z, ld_z, bias, h_prev, ld_h, w_t, H, rows);                                \
  }                                                                                                               \
  template <typename scalar_t, Activation A>                                                                      \
  TARGET_ATTRIBUTE void backward_##SUFFIX(scalar_t* grad_z, const scalar_t* h, int64_t ld, scalar_t* grad_h,      \
                                          const scalar_t* w, int64_t H, int64_t rows) {                           \
    backward_body<USE_FMA, scalar_t, A>(grad_z, h, ld, grad_h, w, H, rows);                                       \
  }                                                                                                               \
  template <typename scalar_t>                                                                                    \
  TARGET_ATTRIBUTE void product_##SUFFIX(scalar_t* C, int64_t ldc, const scalar_t* A, int64_t lda,                \
                                         const scalar_t* packed, int64_t rows, int64_t K, int64_t N,              \
                                         bool accumulate) {                                                       \
    product_body<USE_FMA>(C, ldc, A, lda, packed, rows, K, N, accumulate);                                        \
  }                                                                                                               \
  template <typename scalar_t, Activation A>                                                                      \
  TARGET_ATTRIBUTE void activate_##SUFFIX(scalar_t* z, int64_t ld, const scalar_t* bias, int64_t H,             \
                                          int64_t rows) {                                                         \
    activate_body<scalar_t, A>(z, ld, bias, H, rows);                                                             \
  }                                                                                                               \
  template <typename scalar_t, Activation A>                                                                      \
  TARGET_ATTRIBUTE void activation_backward_##SUFFIX(scalar_t* grad_z, const scalar_t* h, int64_t ld,             \
                                                     const scalar_t* grad_h, int64_t H, int64_t rows) {           \
    activation_backward_body<scalar_t, A>(grad_z, h, ld, grad_h, H, rows);                                        \
  }

#if RNNFAST_HAVE_AVX512_VARIANT
RNNFAST_SMALL_STEP_KERNELS(avx512, RNNFAST_TARGET_AVX512, true)
RNNFAST_SMALL_STEP_KERNELS(avx2, RNNFAST_TARGET_AVX2, true)
#endif
RNNFAST_SMALL_STEP_KERNELS(baseline, , false)
#undef RNNFAST_SMALL_STEP_KERNELS

}  // namespace

bool use_fused_step(int64_t H, int64_t intel_max_hidden) {
  const char* env = std::getenv("RNNFAST_CPU_STEP");
  const std::string choice = env ? env : "auto";
  TORCH_CHECK(choice == "auto" || choice == "fused" || choice == "blas",
              "rnnfast: RNNFAST_CPU_STEP must be auto, fused or blas, got '", choice, "'");
  return choice == "fused" || (choice == "auto" && (H <= intel_max_hidden || !cpu_is_intel()));
}

// Returns KERNEL's variant for the widest instruction set the CPU runs, called on the arguments.
#if RNNFAST_HAVE_AVX512_VARIANT
#define RNNFAST_CALL_WIDEST(KERNEL, ...)                                                 \
  do {                                                                                   \
    if (cpu_has_avx512()) return KERNEL##_avx512<scalar_t, A>(__VA_ARGS__);             \
    if (cpu_has_avx2()) return KERNEL##_avx2<scalar_t, A>(__VA_ARGS__);                 \
    return KERNEL##_baseline<scalar_t, A>(__VA_ARGS__);                                 \
  } while (0)
#else
#define RNNFAST_CALL_WIDEST(KERNEL, ...) return KERNEL##_baseline<scalar_t, A>(__VA_ARGS__)
#endif

template <typename scalar_t, Activation A>
void forward_step_small(scalar_t* z, int64_t ld_z, const scalar_t* bias, const scalar_t* h_prev, int64_t ld_h,
                        const scalar_t* w_hh_t, int64_t H, int64_t rows) {
  RNNFAST_CALL_WIDEST(forward, z, ld_z, bias, h_prev, ld_h, w_hh_t, H, rows);
}

template <typename scalar_t, Activation A>
void backward_step_small(scalar_t* grad_z, const scalar_t* h, int64_t ld, scalar_t* grad_h, const scalar_t* w_hh,
                         int64_t H, int64_t rows) {
  RNNFAST_CALL_WIDEST(backward, grad_z, h, ld, grad_h, w_hh, H, rows);
}

template <typename scalar_t, Activation A>
void activate_rows(scalar_t* z, int64_t ld, const scalar_t* bias, int64_t H, int64_t rows) {
  RNNFAST_CALL_WIDEST(activate, z, ld, bias, H, rows);
}

template <typename scalar_t, Activation A>
void activation_backward_rows(scalar_t* grad_z, const scalar_t* h, int64_t ld, const scalar_t* grad_h, int64_t H,
                              int64_t rows) {
  RNNFAST_CALL_WIDEST(activation_backward, grad_z, h, ld, grad_h, H, rows);
}
#undef RNNFAST_CALL_WIDEST

template <typename scalar_t>
int64_t packed_size(int64_t K, int64_t N) {
  constexpr int64_t columns = kColumns<scalar_t>;
  return K * ((N + columns - 1) / columns * columns);
}

template <typename scalar_t>
void pack_weights(scalar_t* dst, const scalar_t* M, int64_t ldm, int64_t K, int64_t N) {
  constexpr int64_t columns = kColumns<scalar_t>;
  for (int64_t j0 = 0; j0 < N; j0 += columns) {
    const int64_t width = std::min(columns, N - j0);
    scalar_t* panel = dst + j0 * K;  // (K, columns)
    for (int64_t k = 0; k < K; ++k) {
      std::copy_n(M + k * ldm + j0, width, panel + k * columns);
      std::fill(panel + k * columns + width, panel + (k + 1) * columns, scalar_t(0));
    }
  }
}

template <typename scalar_t>
void step_product(scalar_t* C, int64_t ldc, const scalar_t* A, int64_t lda, const scalar_t* packed, int64_t rows,
                  int64_t K, int64_t N, bool accumulate) {
#if RNNFAST_HAVE_AVX512_VARIANT
  if (cpu_has_avx512()) return product_avx512<scalar_t>(C, ldc, A, lda, packed, rows, K, N, accumulate);
  if (cpu_has_avx2()) return product_avx2<scalar_t>(C, ldc, A, lda, packed, rows, K, N, accumulate);
#endif
  return product_baseline<scalar_t>(C, ldc, A, lda, packed, rows, K, N, accumulate);
}

#define RNNFAST_INSTANTIATE_PRODUCT(T)                                                                        \
  template int64_t packed_size<T>(int64_t, int64_t);                                                        \
  template void pack_weights<T>(T*, const T*, int64_t, int64_t, int64_t);                                   \
  template void step_product<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t, bool);
RNNFAST_INSTANTIATE_PRODUCT(float)
RNNFAST_INSTANTIATE_PRODUCT(double)
#undef RNNFAST_INSTANTIATE_PRODUCT

#define RNNFAST_INSTANTIATE(T, ACT)                                                                          \
  template void forward_step_small<T, ACT>(T*, int64_t, const T*, const T*, int64_t, const T*, int64_t, int64_t); \
  template void backward_step_small<T, ACT>(T*, const T*, int64_t, T*, const T*, int64_t, int64_t);          \
  template void activate_rows<T, ACT>(T*, int64_t, const T*, int64_t, int64_t);                             \
  template void activation_backward_rows<T, ACT>(T*, const T*, int64_t, const T*, int64_t, int64_t);
RNNFAST_INSTANTIATE(float, Activation::Tanh)
RNNFAST_INSTANTIATE(float, Activation::Relu)
RNNFAST_INSTANTIATE(double, Activation::Tanh)
RNNFAST_INSTANTIATE(double, Activation::Relu)
#undef RNNFAST_INSTANTIATE

}  // namespace cpu
}  // namespace rnnfast
