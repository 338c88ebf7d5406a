// Launch sizes of the general path's elementwise kernels: one thread per element, blocks of 256.
#pragma once

#include <algorithm>
#include <cstdint>

namespace rnnfast {
namespace cuda {

constexpr int kElementwiseThreads = 256;

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::max<int64_t>(1, (n + kElementwiseThreads - 1) / kElementwiseThreads));
}

}  // namespace cuda
}  // namespace rnnfast
