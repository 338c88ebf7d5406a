// The CUDA scans of the linear recurrences (see linear_recurrence.h for the forward and adjoint forms).
//  - diagonal: a two-level block scan. A block holds 32 channels (threadIdx.x, so that each step's loads and
//    stores are coalesced) and up to 32 time chunks of each (threadIdx.y). Each thread composes its chunk into
//    one affine map (product of coefficients, end state from zero); the chunks' carries are scanned across y
//    in shared memory; each thread then scans its chunk again from its carry, writing the states.
//  - dense: for H <= 32, a chunked scan over time in three kernels (compose each chunk's steps into one H x H
//    map, one thread per entry; scan the chunk carries; rescan each chunk from its carry), every chunk of every
//    batch row a block; for larger H, one block per batch row looping over time. Each step of a loop is a
//    matrix-vector product by the block's threads over the H units, the state in shared memory.
// 16-bit inputs accumulate in float32 (at::opmath_type), as the Elman kernels do.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../linear_recurrence.h"

namespace rnnfast {
namespace cuda {
namespace {

constexpr int kScanChannels = 32;   // blockDim.x of the diagonal scan: one warp across channels
constexpr int kMaxTimeChunks = 32;  // blockDim.y at most: 32 x 32 = 1024 threads
constexpr int kMinChunkSteps = 16;  // fewer steps per chunk would spend more on the carries than they save

// Step s's time index and coefficient index (-1 for the identity) in the forward or adjoint order.
__device__ __forceinline__ int64_t scan_time(int64_t s, int64_t T, bool adjoint) { return adjoint ? T - 1 - s : s; }
__device__ __forceinline__ int64_t scan_coef_time(int64_t s, int64_t T, bool adjoint) {
  return adjoint ? (s == 0 ? -1 : T - s) : s;
}

// a, b, out: (T, N) with N = B*H channels; init: (N). Shared memory: 3 * chunks * kScanChannels acc_t.
template <typename scalar_t, typename acc_t>
__global__ void diagonal_scan_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                                     const scalar_t* __restrict__ init, scalar_t* __restrict__ out, int64_t T,
                                     int64_t N, int64_t chunk_steps, bool adjoint) {
  extern __shared__ unsigned char shared_bytes[];
  acc_t* map = reinterpret_cast<acc_t*>(shared_bytes);  // (chunks, kScanChannels): product of the coefficients
  acc_t* end = map + blockDim.y * kScanChannels;         // (chunks, kScanChannels): end state from zero
  acc_t* carry = end + blockDim.y * kScanChannels;       // (chunks, kScanChannels): state entering the chunk
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kScanChannels + threadIdx.x;
  const int slot = threadIdx.y * kScanChannels + threadIdx.x;
  const int64_t s_begin = std::min<int64_t>(T, threadIdx.y * chunk_steps);
  const int64_t s_end = std::min<int64_t>(T, s_begin + chunk_steps);
  const bool active = n < N;

  acc_t P = 1, e = 0;
  if (active) {
    for (int64_t s = s_begin; s < s_end; ++s) {
      const int64_t ct = scan_coef_time(s, T, adjoint);
      const acc_t c = ct < 0 ? acc_t(1) : static_cast<acc_t>(a[ct * N + n]);
      e = c * e + static_cast<acc_t>(b[scan_time(s, T, adjoint) * N + n]);
      P *= c;
    }
  }
  map[slot] = P;
  end[slot] = e;
  __syncthreads();
  // The carries across chunks: at most kMaxTimeChunks steps, by the first row of threads.
  if (threadIdx.y == 0) {
    acc_t h = active ? static_cast<acc_t>(init[n]) : acc_t(0);
    for (unsigned k = 0; k < blockDim.y; ++k) {
      carry[k * kScanChannels + threadIdx.x] = h;
      h = map[k * kScanChannels + threadIdx.x] * h + end[k * kScanChannels + threadIdx.x];
    }
  }
  __syncthreads();
  if (!active) return;
  acc_t h = carry[slot];
  for (int64_t s = s_begin; s < s_end; ++s) {
    const int64_t ct = scan_coef_time(s, T, adjoint);
    const int64_t t = scan_time(s, T, adjoint);
    h = (ct < 0 ? h : static_cast<acc_t>(a[ct * N + n]) * h) + static_cast<acc_t>(b[t * N + n]);
    out[t * N + n] = static_cast<scalar_t>(h);
  }
}

// The dense scan in time chunks, for H <= kMaxChunkedHidden: the same three passes as the CPU's chunked scan
// (csrc/cpu/chunked_scan.h), one kernel each. Chunk k of a row covers steps [k * chunk_steps, (k+1) *
// chunk_steps). With one chunk only the last kernel runs, a plain loop over time from h0.
constexpr int64_t kMaxChunkedHidden = 32;  // a chunk's composed map, H x H, one thread per entry
constexpr int64_t kDenseChunkSteps = 32;   // steps per chunk at least
constexpr int64_t kMaxDenseChunks = 1024;  // the carries kernel walks the chunks one by one

// Pass 1, grid (B, chunks), block (H, H): composes chunk k's steps into maps (B, chunks, H, H), P_k, and ends
// (B, chunks, H), its end state from zero. Shared memory: 2 * H * H + H acc_t.
template <typename scalar_t, typename acc_t>
__global__ void dense_chunk_summary_kernel(const scalar_t* __restrict__ A, const scalar_t* __restrict__ b,
                                           acc_t* __restrict__ maps, acc_t* __restrict__ ends, int64_t T, int64_t B,
                                           int64_t H, int64_t chunk_steps, bool adjoint) {
  extern __shared__ unsigned char shared_bytes[];
  acc_t* P = reinterpret_cast<acc_t*>(shared_bytes);  // (H, H): the chunk's steps so far, composed
  acc_t* C = P + H * H;                                // (H, H): this step's coefficient as applied
  acc_t* e = C + H * H;                                // (H): the end state so far, from zero
  const int64_t row = blockIdx.x, k = blockIdx.y, chunks = gridDim.y;
  const int i = threadIdx.y, j = threadIdx.x;
  const int64_t s_begin = std::min<int64_t>(T, k * chunk_steps);
  const int64_t s_end = std::min<int64_t>(T, s_begin + chunk_steps);
  P[i * H + j] = i == j ? acc_t(1) : acc_t(0);
  if (i == 0) e[j] = 0;
  __syncthreads();
  for (int64_t s = s_begin; s < s_end; ++s) {
    const int64_t ct = scan_coef_time(s, T, adjoint);
    const int64_t t = scan_time(s, T, adjoint);
    if (ct < 0) {
      C[i * H + j] = i == j ? acc_t(1) : acc_t(0);
    } else {
      const scalar_t* At = A + (ct * B + row) * H * H;
      C[i * H + j] = static_cast<acc_t>(adjoint ? At[j * H + i] : At[i * H + j]);
    }
    __syncthreads();
    acc_t p = 0, next_e = 0;
    for (int64_t m = 0; m < H; ++m) p += C[i * H + m] * P[m * H + j];
    if (j == 0) {
      next_e = static_cast<acc_t>(b[(t * B + row) * H + i]);
      for (int64_t m = 0; m < H; ++m) next_e += C[i * H + m] * e[m];
    }
    __syncthreads();
    P[i * H + j] = p;
    if (j == 0) e[i] = next_e;
    __syncthreads();
  }
  maps[((row * chunks + k) * H + i) * H + j] = P[i * H + j];
  if (j == 0) ends[(row * chunks + k) * H + i] = e[i];
}

// Pass 2, grid (B), block (H): carries (B, chunks, H), the state entering each chunk, from init (B, H):
// carry_0 = init, carry_{k+1} = P_k carry_k + e_k. Shared memory: H acc_t.
template <typename scalar_t, typename acc_t>
__global__ void dense_chunk_carry_kernel(const acc_t* __restrict__ maps, const acc_t* __restrict__ ends,
                                         const scalar_t* __restrict__ init, acc_t* __restrict__ carries, int64_t H,
                                         int64_t chunks) {
  extern __shared__ unsigned char shared_bytes[];
  acc_t* h = reinterpret_cast<acc_t*>(shared_bytes);  // (H)
  const int64_t row = blockIdx.x;
  const int i = threadIdx.x;
  h[i] = static_cast<acc_t>(init[row * H + i]);
  __syncthreads();
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t chunk = row * chunks + k;
    carries[chunk * H + i] = h[i];
    acc_t next = ends[chunk * H + i];
    for (int64_t j = 0; j < H; ++j) next += maps[(chunk * H + i) * H + j] * h[j];
    __syncthreads();
    h[i] = next;
    __syncthreads();
  }
}

// Pass 3 (or the whole scan, with one chunk), grid (B, chunks), block over the H units: scans chunk k of a row
// from its entering state, init (B, chunks, H) in init_t (the carries, or h0 itself with one chunk), and writes
// out (T, B, H). A: (T, B, H, H), b: (T, B, H). Shared memory: 2 * H acc_t.
template <typename scalar_t, typename acc_t, typename init_t>
__global__ void dense_scan_kernel(const scalar_t* __restrict__ A, const scalar_t* __restrict__ b,
                                  const init_t* __restrict__ init, scalar_t* __restrict__ out, int64_t T,
                                  int64_t B, int64_t H, int64_t chunk_steps, bool adjoint) {
  extern __shared__ unsigned char shared_bytes[];
  acc_t* state = reinterpret_cast<acc_t*>(shared_bytes);  // (H): the previous step's state
  acc_t* next = state + H;                                 // (H): this step's
  const int64_t row = blockIdx.x, k = blockIdx.y, chunks = gridDim.y;
  const int64_t s_begin = std::min<int64_t>(T, k * chunk_steps);
  const int64_t s_end = std::min<int64_t>(T, s_begin + chunk_steps);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    state[i] = static_cast<acc_t>(init[(row * chunks + k) * H + i]);
  }
  __syncthreads();
  for (int64_t s = s_begin; s < s_end; ++s) {
    const int64_t ct = scan_coef_time(s, T, adjoint);
    const int64_t t = scan_time(s, T, adjoint);
    const scalar_t* C = ct < 0 ? nullptr : A + (ct * B + row) * H * H;  // (H, H)
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
      acc_t acc = static_cast<acc_t>(b[(t * B + row) * H + i]);
      if (C == nullptr) {
        acc += state[i];
      } else {
        // Forward: row i of C; adjoint: column i (C^T's row), which neighbouring threads read coalesced.
        for (int64_t j = 0; j < H; ++j) {
          acc += static_cast<acc_t>(adjoint ? C[j * H + i] : C[i * H + j]) * state[j];
        }
      }
      next[i] = acc;
      out[(t * B + row) * H + i] = static_cast<scalar_t>(acc);
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) state[i] = next[i];
    __syncthreads();
  }
}

void diagonal_scan_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& init, at::Tensor& out,
                        bool adjoint) {
  const c10::cuda::CUDAGuard guard(b.device());
  const int64_t T = b.size(0), N = b.size(1) * b.size(2);
  const int64_t chunks = std::clamp<int64_t>(T / kMinChunkSteps, 1, kMaxTimeChunks);
  const int64_t chunk_steps = (T + chunks - 1) / chunks;
  const dim3 block(kScanChannels, static_cast<unsigned>(chunks));
  const dim3 grid(static_cast<unsigned>((N + kScanChannels - 1) / kScanChannels));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "linear_recurrence_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t shared = 3 * chunks * kScanChannels * sizeof(acc_t);
    diagonal_scan_kernel<scalar_t, acc_t><<<grid, block, shared, c10::cuda::getCurrentCUDAStream()>>>(
        a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), init.const_data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), T, N, chunk_steps, adjoint);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void dense_scan_cuda(const at::Tensor& A, const at::Tensor& b, const at::Tensor& init, at::Tensor& out,
                     bool adjoint) {
  const c10::cuda::CUDAGuard guard(b.device());
  const int64_t T = b.size(0), B = b.size(1), H = b.size(2);
  TORCH_CHECK(B <= 2147483647, "rnnfast: dense_linear_recurrence on CUDA takes at most 2^31 - 1 batch rows, got ",
              B);
  // Time chunks only where a chunk's map fits one block; composing costs H times a plain step, paid back by
  // running the chunks at once.
  const int64_t chunks = H <= kMaxChunkedHidden ? std::clamp<int64_t>(T / kDenseChunkSteps, 1, kMaxDenseChunks) : 1;
  const int64_t chunk_steps = (T + chunks - 1) / chunks;
  const unsigned threads = static_cast<unsigned>(std::min<int64_t>(1024, (H + 31) / 32 * 32));
  const dim3 grid(static_cast<unsigned>(B), static_cast<unsigned>(chunks));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "dense_linear_recurrence_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t scan_shared = 2 * H * sizeof(acc_t);
    TORCH_CHECK(scan_shared <= 48 * 1024, "rnnfast: dense_linear_recurrence on CUDA takes H up to ",
                48 * 1024 / (2 * sizeof(acc_t)), " in this dtype, got ", H);
    const scalar_t* A_ptr = A.const_data_ptr<scalar_t>();
    const scalar_t* b_ptr = b.const_data_ptr<scalar_t>();
    if (chunks == 1) {
      dense_scan_kernel<scalar_t, acc_t, scalar_t><<<grid, threads, scan_shared, stream>>>(
          A_ptr, b_ptr, init.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), T, B, H, chunk_steps, adjoint);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const auto acc_options = b.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    at::Tensor maps = at::empty({B, chunks, H, H}, acc_options);  // (B, chunks, H, H)
    at::Tensor ends = at::empty({B, chunks, H}, acc_options);     // (B, chunks, H)
    at::Tensor carries = at::empty({B, chunks, H}, acc_options);  // (B, chunks, H)
    const dim3 square(static_cast<unsigned>(H), static_cast<unsigned>(H));
    dense_chunk_summary_kernel<scalar_t, acc_t><<<grid, square, (2 * H * H + H) * sizeof(acc_t), stream>>>(
        A_ptr, b_ptr, maps.data_ptr<acc_t>(), ends.data_ptr<acc_t>(), T, B, H, chunk_steps, adjoint);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    dense_chunk_carry_kernel<scalar_t, acc_t><<<static_cast<unsigned>(B), static_cast<unsigned>(H),
                                                H * sizeof(acc_t), stream>>>(
        maps.const_data_ptr<acc_t>(), ends.const_data_ptr<acc_t>(), init.const_data_ptr<scalar_t>(),
        carries.data_ptr<acc_t>(), H, chunks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    dense_scan_kernel<scalar_t, acc_t, acc_t><<<grid, threads, scan_shared, stream>>>(
        A_ptr, b_ptr, carries.const_data_ptr<acc_t>(), out.data_ptr<scalar_t>(), T, B, H, chunk_steps, adjoint);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace
}  // namespace cuda
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CUDA, m) {
  rnnfast::register_linear_recurrence_ops<rnnfast::cuda::diagonal_scan_cuda, rnnfast::cuda::dense_scan_cuda>(m);
}
