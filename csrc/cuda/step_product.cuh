// One thread block's tile of a per-step product C = A @ Bk, the engine of the fused-step path (a step's recurrent
// product and its pointwise work in one launch): 16 rows of A, which the caller's loader gathers or computes on
// the fly, times 64 columns of a row-major (K x N) panel, accumulated in acc_t. The loader is what makes the step
// fused: A's rows can be h_{t-1} read from wherever each row's state lives (forward), or dL/dz computed from
// dL/dh and h_t as it is staged (backward). Plain CUDA C++ with no ATen (persistent_device.cuh), so that
// tests/cuda_emulation runs it on the CPU.
#pragma once

#include <cstddef>
#include <cstdint>

#include "persistent_device.cuh"  // RNNFAST_DYNAMIC_SHARED

namespace rnnfast {
namespace cuda {
namespace step_product {

constexpr int kThreads = 256;
constexpr int kTileRows = 16;
constexpr int kTileCols = 64;
// Each thread multiplies a 4 x 4 micro-tile, so one pair of 4-wide shared loads feeds 16 multiply-adds; 64
// threads cover the 16 x 64 tile, and the block's four groups of 64 split K between them (at the small batches
// this path is for, a tile's 16 x 64 outputs are the whole step for few blocks, and K is where the work is).
constexpr int kMicro = 4;
constexpr int kGroups = kThreads / ((kTileRows / kMicro) * (kTileCols / kMicro));
static_assert(kGroups == 4, "the micro-tiles of one group must cover the tile");

// K staged in shared memory at a time: (16 + 64) rows of K values, 80 KB in float32 or float64 (16-bit operands
// are staged widened). H <= 256 (float32) or 128 (float64) takes one pass.
template <typename acc_t>
constexpr int chunk() {
  return sizeof(acc_t) == 8 ? 128 : 256;
}

template <typename acc_t>
constexpr size_t shared_bytes() {
  return static_cast<size_t>(kTileRows + kTileCols) * chunk<acc_t>() * sizeof(acc_t);
}

// A kernel's dynamic shared memory as an acc_t array `name`: one declaration (as double, aligned for every type)
// for all instances, whose element types would otherwise clash.
#define RNNFAST_STEP_SHARED(acc_t, name)             \
  RNNFAST_DYNAMIC_SHARED(double, step_shared_raw); \
  acc_t* name = reinterpret_cast<acc_t*>(step_shared_raw)

// This thread's four results of the tile lie in row result_row() at columns result_col() + 0..3.
__device__ __forceinline__ int result_row() { return static_cast<int>(threadIdx.x) / (kTileCols / kMicro); }
__device__ __forceinline__ int result_col() { return static_cast<int>(threadIdx.x) % (kTileCols / kMicro) * kMicro; }

// Sums over all K of A's tile rows times the panel's columns, into this thread's four results (result_row,
// result_col). load_a(r, k) returns A[r][k] for tile row r < 16 and 0 <= k < K, as acc_t (0 for rows past the
// operand's end); it is called once per (r, k) per block. panel points at Bk's column of the tile's first result
// (row stride ldb); columns at or past valid_cols read as 0. smem: shared_bytes<acc_t>() bytes. Every thread of
// the block must call it.
template <typename scalar_t, typename acc_t, typename LoadA>
__device__ __forceinline__ void tile_product(LoadA&& load_a, const scalar_t* panel, int64_t ldb, int K,
                                             int valid_cols, acc_t* smem, acc_t (&result)[kMicro]) {
  constexpr int kc = chunk<acc_t>();
  acc_t* a_s = smem;                   // (kc, 16): A's chunk k-major, so a micro-tile's 4 rows are adjacent
  acc_t* b_s = smem + kc * kTileRows;  // (kc, 64): the panel's chunk
  const int tid = static_cast<int>(threadIdx.x);
  const int group = tid / (kThreads / kGroups), lane = tid % (kThreads / kGroups);
  const int row0 = lane / (kTileCols / kMicro) * kMicro, col0 = lane % (kTileCols / kMicro) * kMicro;
  acc_t acc[kMicro][kMicro];
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
#pragma unroll
    for (int j = 0; j < kMicro; ++j) acc[i][j] = acc_t(0);
  }
  for (int k0 = 0; k0 < K; k0 += kc) {
    const int len = K - k0 < kc ? K - k0 : kc;
    for (int i = tid; i < kTileRows * len; i += kThreads) {
      const int r = i / len, k = i % len;  // k fastest: the loader's reads of a row are adjacent
      a_s[k * kTileRows + r] = load_a(r, k0 + k);
    }
    for (int i = tid; i < kTileCols * len; i += kThreads) {
      const int k = i / kTileCols, c = i % kTileCols;
      b_s[i] = c < valid_cols ? static_cast<acc_t>(panel[(k0 + k) * ldb + c]) : acc_t(0);
    }
    __syncthreads();
    const int per_group = (len + kGroups - 1) / kGroups;
    const int k_end = (group + 1) * per_group < len ? (group + 1) * per_group : len;
    for (int k = group * per_group; k < k_end; ++k) {
      acc_t a[kMicro], b[kMicro];
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        a[i] = a_s[k * kTileRows + row0 + i];
        b[i] = b_s[k * kTileCols + col0 + i];
      }
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
#pragma unroll
        for (int j = 0; j < kMicro; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    __syncthreads();
  }
  // The groups' partial sums meet in shared memory (the staging area, free again): (groups, 16, 64).
  acc_t* partial = smem;
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
#pragma unroll
    for (int j = 0; j < kMicro; ++j) partial[(group * kTileRows + row0 + i) * kTileCols + col0 + j] = acc[i][j];
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < kMicro; ++j) {
    acc_t sum = acc_t(0);
#pragma unroll
    for (int g = 0; g < kGroups; ++g) sum += partial[(g * kTileRows + result_row()) * kTileCols + result_col() + j];
    result[j] = sum;
  }
}

// C (m x n, row stride ldc) = A (m x k, row stride lda) @ Bk (k x n, row stride ldb), or C + that product when
// accumulate: a per-step product on the tiles above, for the gated cells' general-path loop under
// RNNFAST_CUDA_PATH=fused (gated.cu). Grid: (column tiles, row tiles).
template <typename scalar_t>
struct ProductParams {
  const scalar_t* a;
  const scalar_t* b;
  scalar_t* c;
  int64_t lda, ldb, ldc;
  int m, n, k;
  bool accumulate;
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) product_kernel(ProductParams<scalar_t> p) {
  RNNFAST_STEP_SHARED(acc_t, smem);
  const int row0 = static_cast<int>(blockIdx.y) * kTileRows, col0 = static_cast<int>(blockIdx.x) * kTileCols;
  auto a_rows = [&](int r, int k) -> acc_t {
    return row0 + r < p.m ? static_cast<acc_t>(p.a[(row0 + r) * p.lda + k]) : acc_t(0);
  };
  acc_t sums[kMicro];
  tile_product<scalar_t, acc_t>(a_rows, p.b + col0, p.ldb, p.k, p.n - col0, smem, sums);
  const int row = row0 + result_row();
  if (row >= p.m) return;
#pragma unroll
  for (int c = 0; c < kMicro; ++c) {
    const int col = col0 + result_col() + c;
    if (col >= p.n) break;
    scalar_t* out = p.c + row * p.ldc + col;
    // C is read only when accumulating: a fresh buffer may hold NaN.
    *out = static_cast<scalar_t>(p.accumulate ? sums[c] + static_cast<acc_t>(*out) : sums[c]);
  }
}

// Tiles along a product's n columns (grid x) and m rows (grid y).
inline int64_t column_tiles(int64_t n) { return (n + kTileCols - 1) / kTileCols; }
inline int64_t row_tiles(int64_t m) { return (m + kTileRows - 1) / kTileRows; }

// Whether a product of m rows has few enough rows of tiles for the grid's y dimension (65535).
inline bool rows_fit_grid(int64_t m) { return row_tiles(m) <= 65535; }

inline dim3 product_grid(int64_t m, int64_t n) {
  return dim3(static_cast<unsigned>(column_tiles(n)), static_cast<unsigned>(row_tiles(m)));
}

}  // namespace step_product
}  // namespace cuda
}  // namespace rnnfast
