// One thread block's tile of a per-step product C = A @ Bk, the engine of the fused-step path (a step's recurrent
// product and its pointwise work in one launch): 16 rows of A, which the caller's loader gathers or computes on
// the fly, times 64 columns of a row-major (K x N) panel, accumulated in acc_t. The loader is what makes the step
// fused: A's rows can be h_{t-1} read from wherever each row's state lives (forward), or dL/dz computed from
// dL/dh and h_t as it is staged (backward). Plain CUDA C++ with no ATen (persistent_device.cuh), so that
// tests/cuda_emulation runs it on the CPU (with cuda_pipeline's asynchronous copies emulated there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "persistent_device.cuh"  // RNNFAST_DYNAMIC_SHARED
#ifndef RNNFAST_CUDA_EMULATION
#include <cuda_pipeline.h>
#endif

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

// K staged in shared memory at a time: 256 (float32) or 128 (float64) values of each of A's 16 rows and the
// panel's 64 columns, 84 KB (16-bit operands are staged widened). H <= 256 (float32) or 128 (float64) takes one
// pass.
template <typename acc_t>
constexpr int chunk() {
  return sizeof(acc_t) == 8 ? 128 : 256;
}

// A's chunk is k-major, so that a micro-tile's four rows are adjacent, with this many acc_t per k: the 16 rows
// and 16 bytes of padding. A thread stages its rows of one k with 16-byte stores, and the padding (an odd count
// of 16-byte units per k) puts the eight stores of a quarter warp in distinct banks, where without it four would
// share each. Still a whole number of 16-byte units, so the micro-tile's rows load in 16-byte reads.
template <typename acc_t>
constexpr int a_stride() {
  return kTileRows + static_cast<int>(16 / sizeof(acc_t));
}

template <typename acc_t>
constexpr size_t shared_bytes() {
  return static_cast<size_t>(a_stride<acc_t>() + kTileCols) * chunk<acc_t>() * sizeof(acc_t);
}

// Blocks an SM holds at once, which the kernels' register use must allow (128 a thread for two): their shared
// memory allows two on sm_80 and sm_90, and at the larger shapes (batch 256, hidden 1024: 256 blocks) one would
// take two waves where two take one. float64 (the gradient checks' type) takes one, which its registers need.
template <typename acc_t>
constexpr int blocks_per_sm() {
  return sizeof(acc_t) == 8 ? 1 : 2;
}

// A kernel's dynamic shared memory as an acc_t array `name`: one declaration for all instances, whose element
// types would otherwise clash, as double2, so that it is declared 16-byte aligned for the 16-byte accesses.
#define RNNFAST_STEP_SHARED(acc_t, name)              \
  RNNFAST_DYNAMIC_SHARED(double2, step_shared_raw); \
  acc_t* name = reinterpret_cast<acc_t*>(step_shared_raw)

// This thread's four results of the tile lie in row result_row() at columns result_col() + 0..3.
__device__ __forceinline__ int result_row() { return static_cast<int>(threadIdx.x) / (kTileCols / kMicro); }
__device__ __forceinline__ int result_col() { return static_cast<int>(threadIdx.x) % (kTileCols / kMicro) * kMicro; }

// Four acc_t of shared memory at a 16-byte-aligned address, moved in 16-byte accesses.
template <typename acc_t>
__device__ __forceinline__ void load4(const acc_t* from, acc_t (&to)[4]) {
  if constexpr (sizeof(acc_t) == 4) {
    const float4 v = *reinterpret_cast<const float4*>(from);
    to[0] = v.x, to[1] = v.y, to[2] = v.z, to[3] = v.w;
  } else {
    const double2 lo = reinterpret_cast<const double2*>(from)[0], hi = reinterpret_cast<const double2*>(from)[1];
    to[0] = lo.x, to[1] = lo.y, to[2] = hi.x, to[3] = hi.y;
  }
}

template <typename acc_t>
__device__ __forceinline__ void store4(acc_t* to, const acc_t* from) {
  if constexpr (sizeof(acc_t) == 4) {
    *reinterpret_cast<float4*>(to) = float4{from[0], from[1], from[2], from[3]};
  } else {
    reinterpret_cast<double2*>(to)[0] = double2{from[0], from[1]};
    reinterpret_cast<double2*>(to)[1] = double2{from[2], from[3]};
  }
}

// A loader's finishing step when what it fetched is A's entry itself.
template <typename acc_t>
struct Widen {
  template <typename T>
  __device__ __forceinline__ acc_t operator()(int, int, const T& value) const {
    return static_cast<acc_t>(value);
  }
};

// Rows [0, len) of a row-major panel chunk (row stride ldb) into b_s (len, 64), columns below valid_cols, as
// asynchronous copies (cuda_pipeline) of kBytes each: no registers, and every copy in flight while the caller
// stages A (it waits with __pipeline_wait_prior(0)). Each thread copies one column span at every kRowsApart-th
// row, so a warp's copies are adjacent. Needs kBytes-aligned rows, and valid_cols a multiple of a copy's values.
template <int kBytes, typename acc_t>
__device__ __forceinline__ void copy_panel(const acc_t* from, int64_t ldb, int len, int valid_cols, acc_t* b_s) {
  constexpr int kValues = kBytes / sizeof(acc_t), kSpansPerRow = kTileCols / kValues;
  constexpr int kRowsApart = kThreads / kSpansPerRow;
  const int tid = static_cast<int>(threadIdx.x);
  const int c = tid % kSpansPerRow * kValues, k_first = tid / kSpansPerRow;
  if (c >= valid_cols) return;
  const acc_t* src = from + k_first * ldb + c;
  acc_t* dst = b_s + k_first * kTileCols + c;
#pragma unroll 4
  for (int k = k_first; k < len; k += kRowsApart) {
    __pipeline_memcpy_async(dst, src, kBytes);
    src += kRowsApart * ldb;
    dst += kRowsApart * kTileCols;
  }
}

// The panel's chunk, rows k0 .. k0 + len of a row-major panel (row stride ldb), into b_s (len, 64), columns below
// valid_cols: the others are left as they are, and so are the results of their columns, which no caller stores.
// Same-type operands copy asynchronously (copy_panel), 16 bytes at a time where rows are whole 16-byte units, so
// that a warp copies 512 bytes at once. 16-bit operands are widened through registers, each thread one column at
// every fourth row, 16 loads in flight.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage_panel(const scalar_t* panel, int64_t ldb, int k0, int len, int valid_cols,
                                            acc_t* b_s) {
  const scalar_t* from = panel + static_cast<int64_t>(k0) * ldb;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    constexpr int kVector = 16 / sizeof(acc_t);
    if (reinterpret_cast<uintptr_t>(panel) % 16 == 0 && ldb % kVector == 0 && valid_cols % kVector == 0) {
      copy_panel<16>(from, ldb, len, valid_cols, b_s);
    } else {
      copy_panel<sizeof(acc_t)>(from, ldb, len, valid_cols, b_s);
    }
    __pipeline_commit();
  } else {
    constexpr int kRowsApart = kThreads / kTileCols, kPerThread = kTileCols * chunk<acc_t>() / kThreads;
    constexpr int kBatch = 16;
    const int c = static_cast<int>(threadIdx.x) % kTileCols, k_first = static_cast<int>(threadIdx.x) / kTileCols;
    if (c >= valid_cols) return;
#pragma unroll
    for (int u0 = 0; u0 < kPerThread; u0 += kBatch) {
      scalar_t v[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int k = k_first + (u0 + u) * kRowsApart;
        if (k < len) v[u] = from[k * ldb + c];
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int k = k_first + (u0 + u) * kRowsApart;
        if (k < len) b_s[k * kTileCols + c] = static_cast<acc_t>(v[u]);
      }
    }
  }
}

// Sums over all K of A's tile rows times the panel's columns, into this thread's four results (result_row,
// result_col). A's entry (r, k), for tile row r < 16 and 0 <= k < K, is finish_a(r, k, fetch_a(r, k)), as acc_t
// (0 for rows past the operand's end): fetch_a only loads (no stores, so that a thread's loads of all its entries
// are in flight at once, up to kRowsInFlight of them), finish_a computes and may store; each is called once per
// (r, k) per block. panel points at Bk's column of the tile's first result (row stride ldb); results at columns
// from valid_cols on are undefined. smem: shared_bytes<acc_t>() bytes. Every thread of the block must call it.
template <typename scalar_t, typename acc_t, int kRowsInFlight = kTileRows, typename FetchA, typename FinishA>
__device__ __forceinline__ void tile_product(FetchA&& fetch_a, FinishA&& finish_a, const scalar_t* panel,
                                             int64_t ldb, int K, int valid_cols, acc_t* smem,
                                             acc_t (&result)[kMicro]) {
  constexpr int kc = chunk<acc_t>(), kStride = a_stride<acc_t>();
  // A's rows each thread stages, of one k: all 16 (float32), or 8 (float64, two threads a k).
  constexpr int kRowsPerThread = kTileRows * kc / kThreads;
  constexpr int kBatch = kRowsInFlight < kRowsPerThread ? kRowsInFlight : kRowsPerThread;
  static_assert(kRowsPerThread % kBatch == 0 && kBatch % kMicro == 0, "a thread's rows of A are stored four at a time");
  acc_t* a_s = smem;                 // (kc, kStride): A's chunk, k-major
  acc_t* b_s = smem + kc * kStride;  // (kc, 64): the panel's chunk
  const int tid = static_cast<int>(threadIdx.x);
  const int group = tid / (kThreads / kGroups), lane = tid % (kThreads / kGroups);
  const int row0 = lane / (kTileCols / kMicro) * kMicro, col0 = lane % (kTileCols / kMicro) * kMicro;
  const int a_k = tid % kc, a_row0 = tid / kc * kRowsPerThread;  // this thread's k and first row of A's chunk
  acc_t acc[kMicro][kMicro];
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
#pragma unroll
    for (int j = 0; j < kMicro; ++j) acc[i][j] = acc_t(0);
  }
  for (int k0 = 0; k0 < K; k0 += kc) {
    const int len = K - k0 < kc ? K - k0 : kc;
    stage_panel(panel, ldb, k0, len, valid_cols, b_s);
    if (a_k < len) {
#pragma unroll
      for (int r0 = a_row0; r0 < a_row0 + kRowsPerThread; r0 += kBatch) {
        decltype(fetch_a(0, 0)) fetched[kBatch];
#pragma unroll
        for (int r = 0; r < kBatch; ++r) fetched[r] = fetch_a(r0 + r, k0 + a_k);
        acc_t values[kBatch];
#pragma unroll
        for (int r = 0; r < kBatch; ++r) values[r] = finish_a(r0 + r, k0 + a_k, fetched[r]);
#pragma unroll
        for (int r = 0; r < kBatch; r += kMicro) store4(a_s + a_k * kStride + r0 + r, values + r);
      }
    }
    __pipeline_wait_prior(0);
    __syncthreads();
    const int per_group = (len + kGroups - 1) / kGroups;
    const int k_end = (group + 1) * per_group < len ? (group + 1) * per_group : len;
    for (int k = group * per_group; k < k_end; ++k) {
      acc_t a[kMicro], b[kMicro];
      load4(a_s + k * kStride + row0, a);
      load4(b_s + k * kTileCols + col0, b);
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
__global__ void __launch_bounds__(kThreads, blocks_per_sm<acc_t>()) product_kernel(ProductParams<scalar_t> p) {
  RNNFAST_STEP_SHARED(acc_t, smem);
  const int row0 = static_cast<int>(blockIdx.y) * kTileRows, col0 = static_cast<int>(blockIdx.x) * kTileCols;
  auto a_rows = [&](int r, int k) -> scalar_t { return row0 + r < p.m ? p.a[(row0 + r) * p.lda + k] : scalar_t(0); };
  acc_t sums[kMicro];
  tile_product<scalar_t, acc_t>(a_rows, Widen<acc_t>(), p.b + col0, p.ldb, p.k, p.n - col0, smem, sums);
  const int row = row0 + result_row(), first_col = col0 + result_col();
  if (row >= p.m) return;
  scalar_t* out = p.c + row * p.ldc + first_col;
  // C is read only when accumulating (a fresh buffer may hold NaN), all four values before any store.
  acc_t before[kMicro];
#pragma unroll
  for (int c = 0; c < kMicro; ++c) {
    before[c] = p.accumulate && first_col + c < p.n ? static_cast<acc_t>(out[c]) : acc_t(0);
  }
#pragma unroll
  for (int c = 0; c < kMicro; ++c) {
    if (first_col + c >= p.n) break;
    out[c] = static_cast<scalar_t>(p.accumulate ? sums[c] + before[c] : sums[c]);
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
