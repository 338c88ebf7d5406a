// The host side of what the persistent CUDA kernels (elman_persistent.cu, gated_persistent.cu) share: one launch
// runs the whole sequence, and a split layer's blocks meet at a grid-wide barrier every step, so they must all be
// resident at once. Their device side is persistent_device.cuh.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "device_limits.h"
#include "persistent_device.cuh"

namespace rnnfast {
namespace cuda {

// Whether `blocks` blocks of `threads` threads with `smem` bytes of dynamic shared memory can run `kernel` on the
// current device; all resident at once (a cooperative launch) when all_resident. Raises the kernel's dynamic
// shared-memory limit to smem, which launching it needs anyway.
inline bool persistent_blocks_fit(const void* kernel, int threads, size_t smem, bool all_resident, int64_t blocks) {
  if (!allow_dynamic_smem(kernel, smem)) return false;
  return !all_resident || cooperative_capacity(kernel, threads, smem) >= blocks;  // independent blocks run in waves
}

// Launches kernel(params) on the current stream; cooperatively when its blocks meet at grid-wide barriers.
template <typename Params>
void launch_persistent(void (*kernel)(Params), Params params, dim3 grid, int threads, size_t smem, bool grid_sync) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (grid_sync) {
    void* args[] = {&params};
    C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), grid, dim3(threads), args, smem,
                                               stream));
  } else {
    kernel<<<grid, threads, smem, stream>>>(params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace cuda
}  // namespace rnnfast
