// What the current device allows a kernel launch, asked of the CUDA driver once and remembered. The kernels with
// dynamic shared memory (the persistent and cluster plans, the fused step's tiles) ask before every launch, and
// choosing a path asks of both directions' kernels: an Elman layer call on the persistent path made 12 to 15 driver
// calls (attributes, cudaFuncSetAttribute, the occupancy query), each of them host time that a training step pays
// beside its kernels, every call, for answers that do not change.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

namespace rnnfast {
namespace cuda {

struct DeviceLimits {
  size_t max_smem_optin;  // dynamic shared memory one block may opt in to, bytes
  int sms;                // streaming multiprocessors
  bool cooperative;       // supports cooperative launches (grid-wide barriers)
  int major;              // compute capability, major version (9: thread-block clusters)
};

inline const DeviceLimits& device_limits(int device) {
  static std::mutex mutex;
  static std::map<int, DeviceLimits> known;  // nodes never move: the reference returned stays valid
  const std::lock_guard<std::mutex> lock(mutex);
  const auto found = known.find(device);
  if (found != known.end()) return found->second;
  int max_optin = 0, sms = 0, cooperative = 0, major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return known[device] = DeviceLimits{static_cast<size_t>(max_optin), sms, cooperative != 0, major};
}

// Raises kernel's dynamic shared-memory limit on the current device to at least smem, as launching it with smem
// bytes needs; false where no block of this device can have that much. The limit only ever rises, so a launch
// with less, remembered as allowed, stays allowed.
inline bool allow_dynamic_smem(const void* kernel, size_t smem) {
  static std::mutex mutex;
  static std::map<std::pair<int, const void*>, size_t> allowed;  // (device, kernel) -> the limit set on it
  const int device = c10::cuda::current_device();
  const std::lock_guard<std::mutex> lock(mutex);
  size_t& limit = allowed[{device, kernel}];  // 0 when new: nothing set yet
  if (smem <= limit) return true;
  if (smem > device_limits(device).max_smem_optin) return false;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  limit = smem;
  return true;
}

template <typename Params>
bool allow_dynamic_smem(void (*kernel)(Params), size_t smem) {
  return allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
}

// How many blocks of kernel (threads each, smem bytes of dynamic shared memory) a cooperative launch can keep
// resident at once on the current device: 0 where the device has no cooperative launch. Ask after
// allow_dynamic_smem(kernel, smem), the state the launch runs in.
inline int64_t cooperative_capacity(const void* kernel, int threads, size_t smem) {
  static std::mutex mutex;
  static std::map<std::tuple<int, const void*, int, size_t>, int64_t> known;
  const int device = c10::cuda::current_device();
  const auto key = std::make_tuple(device, kernel, threads, smem);
  const std::lock_guard<std::mutex> lock(mutex);
  const auto found = known.find(key);
  if (found != known.end()) return found->second;
  const DeviceLimits& limits = device_limits(device);
  int per_sm = 0;
  if (limits.cooperative) {
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  }
  return known[key] = static_cast<int64_t>(per_sm) * limits.sms;
}

}  // namespace cuda
}  // namespace rnnfast
