// Row-major matrix product on raw pointers, for the per-step product inside the time loop, where creating a
// tensor per step would cost more than the arithmetic. It calls the Fortran BLAS that PyTorch's CPU library
// links and exports (MKL on x86-64 wheels), the same routine at::mm reaches.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
}

namespace rnnfast {
namespace cpu {

inline void fortran_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
                         const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                         const int* ldc) {
  sgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void fortran_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                         const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
                         const double* beta, double* c, const int* ldc) {
  dgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// C (m x n, row stride ldc) = beta * C + A (m x k, row stride lda) @ op(Bm), all row-major, where op(Bm) is
// Bm^T for a stored (n x k) Bm when transpose_b, else the stored (k x n) Bm itself.
template <typename scalar_t>
void gemm_row_major(bool transpose_b, int64_t m, int64_t n, int64_t k, const scalar_t* A, int64_t lda,
                    const scalar_t* Bm, int64_t ldb, scalar_t beta, scalar_t* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  constexpr int64_t int_max = std::numeric_limits<int>::max();
  TORCH_CHECK(m <= int_max && n <= int_max && k <= int_max && lda <= int_max && ldb <= int_max && ldc <= int_max,
              "rnnfast: matrix too large for the BLAS interface");
  // Column-major BLAS sees each row-major matrix transposed, so it computes C^T = op(Bm)^T A^T.
  const char ta = transpose_b ? 'T' : 'N', tb = 'N';
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int LDA = static_cast<int>(ldb), LDB = static_cast<int>(lda), LDC = static_cast<int>(ldc);
  const scalar_t one = 1;
  fortran_gemm(&ta, &tb, &M, &N, &K, &one, Bm, &LDA, A, &LDB, &beta, C, &LDC);
}

}  // namespace cpu
}  // namespace rnnfast
