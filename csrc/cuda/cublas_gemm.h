// Row-major matrix product on raw device pointers through cuBLAS, for the per-step product of the general
// CUDA path: no tensor is created per step. 16-bit operands accumulate and land in float32.
#pragma once

#include <ATen/cuda/CUDAContextLight.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <cublas_v2.h>

#include <limits>
#include <type_traits>

namespace rnnfast {
namespace cuda {

template <typename T>
constexpr cudaDataType_t cuda_data_type() {
  if constexpr (std::is_same_v<T, double>) return CUDA_R_64F;
  else if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, c10::Half>) return CUDA_R_16F;
  else return CUDA_R_16BF;
}

// C (m x n, row stride ldc, type acc_t) = beta * C + A (m x k, row stride lda) @ op(Bm), with op(Bm) = Bm^T for
// a stored (n x k) Bm when transpose_b, else the stored (k x n) Bm. All row-major; column-major cuBLAS computes
// C^T. allow_tf32 lets float32 products run on the TF32 matrix units, as cuDNN's RNN does by default.
template <typename scalar_t, typename acc_t>
void gemm_row_major(cublasHandle_t handle, bool allow_tf32, bool transpose_b, int64_t m, int64_t n, int64_t k, const scalar_t* A, int64_t lda,
                    const scalar_t* Bm, int64_t ldb, acc_t* C, int64_t ldc, acc_t beta = acc_t(0)) {
  if (m == 0 || n == 0) return;
  constexpr int64_t int_max = std::numeric_limits<int>::max();
  TORCH_CHECK(m <= int_max && n <= int_max && k <= int_max && lda <= int_max && ldb <= int_max && ldc <= int_max,
              "rnnfast: matrix too large for cuBLAS");
  const acc_t one = 1;
  const cublasComputeType_t compute = std::is_same_v<acc_t, double> ? CUBLAS_COMPUTE_64F
                                      : (std::is_same_v<scalar_t, float> && allow_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                                       : CUBLAS_COMPUTE_32F;
  const cublasStatus_t status = cublasGemmEx(
      handle, transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N,
      static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one, Bm, cuda_data_type<scalar_t>(),
      static_cast<int>(ldb), A, cuda_data_type<scalar_t>(), static_cast<int>(lda), &beta, C,
      cuda_data_type<acc_t>(), static_cast<int>(ldc), compute, CUBLAS_GEMM_DEFAULT);
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "rnnfast: cublasGemmEx failed with status ", static_cast<int>(status));
}

}  // namespace cuda
}  // namespace rnnfast
