// The device side of what the persistent CUDA kernels share: blocks exchange each step's state through global
// memory, read past L1, and meet at barriers. Plain CUDA C++ with no ATen, so that tests/cuda_emulation can
// compile the kernels for the CPU: there RNNFAST_CUDA_EMULATION is defined and the includer has declared the CUDA
// built-ins (threadIdx, __syncthreads, __shfl_xor_sync, __ldcg, the grid group) beforehand.
#pragma once

#ifndef RNNFAST_CUDA_EMULATION
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace rnnfast {
namespace cuda {

// A kernel's dynamic shared memory, as a T array named `name`.
#ifndef RNNFAST_CUDA_EMULATION
#define RNNFAST_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#else
#define RNNFAST_DYNAMIC_SHARED(T, name) T* name = ::rnnfast::emulation::dynamic_shared<T>()
#endif

// Loads that bypass L1: another block wrote these values in the previous step, and L1 is not coherent.
__device__ __forceinline__ float load_coherent(const float* p) { return __ldcg(p); }
#ifndef RNNFAST_CUDA_EMULATION
__device__ __forceinline__ float load_coherent(const c10::Half* p) {
  return __half2float(__ldcg(reinterpret_cast<const __half*>(p)));
}
__device__ __forceinline__ float load_coherent(const c10::BFloat16* p) {
  return __bfloat162float(__ldcg(reinterpret_cast<const __nv_bfloat16*>(p)));
}
#endif

// A warp's 32 partial sums, summed: long dot products stay accurate in float32.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// A block's share of a persistent layer: direction d, hidden units j0 .. j0 + units, batch rows b0 .. b0 + rows.
// blockIdx.x runs over directions and their unit slices, blockIdx.y over batch slices; Params (a kernel's
// parameters) gives H, B, units_per_block, blocks_per_direction and batch_per_block.
struct Slice {
  int d, j0, units, b0, rows;
};

template <typename Params>
__device__ __forceinline__ Slice block_slice(const Params& p) {
  Slice s;
  s.d = blockIdx.x / p.blocks_per_direction;
  s.j0 = (blockIdx.x % p.blocks_per_direction) * p.units_per_block;
  s.units = max(0, min(p.units_per_block, p.H - s.j0));
  s.b0 = blockIdx.y * p.batch_per_block;
  s.rows = max(0, min(p.batch_per_block, p.B - s.b0));
  return s;
}

// On the host: a kernel's sizes and plan fields, which block_slice reads, from a layer's sizes (ElmanSizes,
// GatedSizes) and its plan.
template <typename Params, typename Sizes, typename Plan>
void set_sizes_and_plan(Params& p, const Sizes& s, const Plan& plan) {
  p.T = static_cast<int>(s.T);
  p.B = static_cast<int>(s.B);
  p.H = static_cast<int>(s.H);
  p.D = static_cast<int>(s.D);
  p.units_per_block = plan.units_per_block;
  p.blocks_per_direction = plan.blocks_per_direction;
  p.batch_per_block = plan.batch_per_block;
}

// The grid of a persistent layer: blockIdx.x over directions and their blocks, blockIdx.y over batch slices, as
// block_slice reads it.
template <typename Sizes, typename Plan>
dim3 persistent_grid(const Sizes& s, const Plan& plan) {
  return dim3(static_cast<unsigned>(s.D * plan.blocks_per_direction), static_cast<unsigned>(plan.batch_blocks));
}

// The end of a step of a persistent loop: with kGridSync every block of the grid waits for the others (a
// cooperative launch); without, only the block's own threads.
template <bool kGridSync>
__device__ __forceinline__ void step_barrier() {
  if constexpr (kGridSync) {
    cooperative_groups::this_grid().sync();
  } else {
    __syncthreads();
  }
}

}  // namespace cuda
}  // namespace rnnfast
