// The small-hidden-size step kernels of small_step.h, compiled per instruction set and dispatched at run time.
#include "small_step.h"

#include <algorithm>
#include <cmath>
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

// acc = in (rows x H) @ m (H x H)[:, j0 : j0 + width] for one tile, unrolled when the tile is full.
template <bool use_fma, typename scalar_t>
__attribute__((always_inline)) inline void product_tile(scalar_t (&acc)[kRows][kColumns<scalar_t>], int64_t rows,
                                                        int64_t width, const scalar_t* in, int64_t ld_in,
                                                        const scalar_t* m, int64_t H) {
  constexpr int64_t columns = kColumns<scalar_t>;
  if (rows == kRows && width == columns) {
    accumulate_tile<use_fma>(acc, Constant<kRows>{}, Constant<columns>{}, in, ld_in, m, H, H);
  } else if (rows == 1 && width == columns) {
    accumulate_tile<use_fma>(acc, Constant<1>{}, Constant<columns>{}, in, ld_in, m, H, H);
  } else {
    accumulate_tile<use_fma>(acc, rows, width, in, ld_in, m, H, H);
  }
}

template <bool use_fma, typename scalar_t, Activation A>
__attribute__((always_inline)) inline void forward_body(scalar_t* z, int64_t ld_z, const scalar_t* h_prev,
                                                        int64_t ld_h, const scalar_t* w_t, int64_t H, int64_t rows) {
  constexpr int64_t columns = kColumns<scalar_t>;
  for (int64_t b0 = 0; b0 < rows; b0 += kRows) {
    const int64_t tile_rows = std::min(kRows, rows - b0);
    for (int64_t j0 = 0; j0 < H; j0 += columns) {
      const int64_t width = std::min(columns, H - j0);
      scalar_t acc[kRows][columns];  // (kRows, columns): pre-activations of this tile
      for (int64_t r = 0; r < tile_rows; ++r) std::copy_n(z + (b0 + r) * ld_z + j0, width, acc[r]);
      product_tile<use_fma>(acc, tile_rows, width, h_prev + b0 * ld_h, ld_h, w_t + j0, H);
      for (int64_t r = 0; r < tile_rows; ++r) {
        scalar_t* zr = z + (b0 + r) * ld_z + j0;
        for (int64_t i = 0; i < width; ++i) zr[i] = ActivationFn<A>::forward(acc[r][i]);
      }
    }
  }
}

template <typename scalar_t, Activation A>
__attribute__((always_inline)) inline void activate_body(scalar_t* z, int64_t ld, int64_t H, int64_t rows) {
  for (int64_t b = 0; b < rows; ++b) {
    scalar_t* zb = z + b * ld;
    for (int64_t j = 0; j < H; ++j) zb[j] = ActivationFn<A>::forward(zb[j]);
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
  for (int64_t b0 = 0; b0 < rows; b0 += kRows) {
    const int64_t tile_rows = std::min(kRows, rows - b0);
    for (int64_t k0 = 0; k0 < H; k0 += columns) {
      const int64_t width = std::min(columns, H - k0);
      scalar_t acc[kRows][columns] = {};  // (kRows, columns): dL/dh_{t-1} of this tile
      product_tile<use_fma>(acc, tile_rows, width, grad_z + b0 * ld, ld, w + k0, H);
      for (int64_t r = 0; r < tile_rows; ++r) std::copy_n(acc[r], width, grad_h + (b0 + r) * H + k0);
    }
  }
}

// One copy of each kernel per instruction set (simd_target.h): AVX-512 and AVX2 with FMA, and the baseline.
#define RNNFAST_SMALL_STEP_KERNELS(SUFFIX, TARGET_ATTRIBUTE, USE_FMA)                                              \
  template <typename scalar_t, Activation A>                                                                      \
  TARGET_ATTRIBUTE void forward_##SUFFIX(scalar_t* z, int64_t ld_z, const scalar_t* h_prev, int64_t ld_h,         \
                                         const scalar_t* w_t, int64_t H, int64_t rows) {                          \
    forward_body<USE_FMA, scalar_t, A>(z, ld_z, h_prev, ld_h, w_t, H, rows);                                      \
  }                                                                                                               \
  template <typename scalar_t, Activation A>                                                                      \
  TARGET_ATTRIBUTE void backward_##SUFFIX(scalar_t* grad_z, const scalar_t* h, int64_t ld, scalar_t* grad_h,      \
                                          const scalar_t* w, int64_t H, int64_t rows) {                           \
    backward_body<USE_FMA, scalar_t, A>(grad_z, h, ld, grad_h, w, H, rows);                                       \
  }                                                                                                               \
  template <typename scalar_t, Activation A>                                                                      \
  TARGET_ATTRIBUTE void activate_##SUFFIX(scalar_t* z, int64_t ld, int64_t H, int64_t rows) {                     \
    activate_body<scalar_t, A>(z, ld, H, rows);                                                                   \
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
void forward_step_small(scalar_t* z, int64_t ld_z, const scalar_t* h_prev, int64_t ld_h, const scalar_t* w_hh_t,
                        int64_t H, int64_t rows) {
  RNNFAST_CALL_WIDEST(forward, z, ld_z, h_prev, ld_h, w_hh_t, H, rows);
}

template <typename scalar_t, Activation A>
void backward_step_small(scalar_t* grad_z, const scalar_t* h, int64_t ld, scalar_t* grad_h, const scalar_t* w_hh,
                         int64_t H, int64_t rows) {
  RNNFAST_CALL_WIDEST(backward, grad_z, h, ld, grad_h, w_hh, H, rows);
}

template <typename scalar_t, Activation A>
void activate_rows(scalar_t* z, int64_t ld, int64_t H, int64_t rows) {
  RNNFAST_CALL_WIDEST(activate, z, ld, H, rows);
}

template <typename scalar_t, Activation A>
void activation_backward_rows(scalar_t* grad_z, const scalar_t* h, int64_t ld, const scalar_t* grad_h, int64_t H,
                              int64_t rows) {
  RNNFAST_CALL_WIDEST(activation_backward, grad_z, h, ld, grad_h, H, rows);
}
#undef RNNFAST_CALL_WIDEST

#define RNNFAST_INSTANTIATE(T, ACT)                                                                          \
  template void forward_step_small<T, ACT>(T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t);    \
  template void backward_step_small<T, ACT>(T*, const T*, int64_t, T*, const T*, int64_t, int64_t);          \
  template void activate_rows<T, ACT>(T*, int64_t, int64_t, int64_t);                                       \
  template void activation_backward_rows<T, ACT>(T*, const T*, int64_t, const T*, int64_t, int64_t);
RNNFAST_INSTANTIATE(float, Activation::Tanh)
RNNFAST_INSTANTIATE(float, Activation::Relu)
RNNFAST_INSTANTIATE(double, Activation::Tanh)
RNNFAST_INSTANTIATE(double, Activation::Relu)
#undef RNNFAST_INSTANTIATE

}  // namespace cpu
}  // namespace rnnfast
