// The per-step products of the gated cells' general-path loop (gated.cu), by cuBLAS or, under
// RNNFAST_CUDA_PATH=fused, by rnnfast's tiles (step_product.cuh). At the small batches where the general path lags
// cuDNN, a step's product is a (B x H) @ (H x G*H) or smaller, and what cuBLAS chooses for it measured slow; the
// tiles read a weight (k x n) along its rows, so a product with a weight's transpose takes a copy transposed
// once per call.
#pragma once

#include <ATen/Context.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <climits>

#include "cublas_gemm.h"
#include "device_limits.h"
#include "step_product.cuh"

namespace rnnfast {
namespace cuda {

template <typename scalar_t>
class StepGemm {
 public:
  explicit StepGemm(bool tiled)
      : tiled_(tiled),
        stream_(c10::cuda::getCurrentCUDAStream()),
        // Fetched once: setting the handle up per step would cost more host time than the step's launches.
        handle_(at::cuda::getCurrentCUDABlasHandle()),
        tf32_(at::globalContext().allowTF32CuDNN()) {
    if (tiled_) {
      TORCH_CHECK(allow_dynamic_smem(step_product::product_kernel<scalar_t, scalar_t>,
                                     step_product::shared_bytes<scalar_t>()),
                  "rnnfast: the tiled step product needs ", step_product::shared_bytes<scalar_t>(),
                  " bytes of shared memory a block, more than this device allows");
    }
  }

  bool tiled() const { return tiled_; }

  // C (m x n, row stride ldc) = A (m x k, row stride lda) @ W^T + beta * C, for a weight stored (n x k) with row
  // stride ldw; w_t is its transpose (k x n, contiguous), which the tiles read (unused by cuBLAS).
  void times_transposed(int64_t m, int64_t n, int64_t k, const scalar_t* a, int64_t lda, const scalar_t* w,
                        int64_t ldw, const scalar_t* w_t, scalar_t* c, int64_t ldc, scalar_t beta = 0) const {
    if (!tiled_ || !tiles(m, n, k, a, lda, w_t, n, c, ldc, beta)) {
      gemm_row_major<scalar_t, scalar_t>(handle_, tf32_, true, m, n, k, a, lda, w, ldw, c, ldc, beta);
    }
  }

  // C (m x n, row stride ldc) = A (m x k, row stride lda) @ W + beta * C, for a weight stored (k x n) with row
  // stride ldw.
  void times(int64_t m, int64_t n, int64_t k, const scalar_t* a, int64_t lda, const scalar_t* w, int64_t ldw,
             scalar_t* c, int64_t ldc, scalar_t beta = 0) const {
    if (!tiled_ || !tiles(m, n, k, a, lda, w, ldw, c, ldc, beta)) {
      gemm_row_major<scalar_t, scalar_t>(handle_, tf32_, false, m, n, k, a, lda, w, ldw, c, ldc, beta);
    }
  }

 private:
  // Runs the product on the tiles and returns true, or returns false for a product whose sizes they do not take
  // (ints, rows_fit_grid), which cuBLAS then runs. beta is 0 or 1 at every call site (a fresh product, or one
  // added to what the cell wrote).
  bool tiles(int64_t m, int64_t n, int64_t k, const scalar_t* a, int64_t lda, const scalar_t* bk, int64_t ldb,
             scalar_t* c, int64_t ldc, scalar_t beta) const {
    if (m == 0 || n == 0) return true;
    TORCH_CHECK(beta == scalar_t(0) || beta == scalar_t(1), "rnnfast: the tiled step product adds with beta 0 or 1");
    if (n > INT_MAX || k > INT_MAX || !step_product::rows_fit_grid(m)) {
      return false;
    }
    const step_product::ProductParams<scalar_t> p{a, bk, c, lda, ldb, ldc, static_cast<int>(m),
                                                  static_cast<int>(n), static_cast<int>(k), beta != scalar_t(0)};
    step_product::product_kernel<scalar_t, scalar_t>
        <<<step_product::product_grid(m, n), step_product::kThreads, step_product::shared_bytes<scalar_t>(),
           stream_>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  }

  bool tiled_;
  cudaStream_t stream_;
  cublasHandle_t handle_;
  bool tf32_;
};

}  // namespace cuda
}  // namespace rnnfast
