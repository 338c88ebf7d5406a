// The directions of a layer are independent loops over time; on two or more threads each runs on its own (its
// BLAS calls single-threaded), so a bidirectional layer takes the time of one direction.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

namespace rnnfast {
namespace cpu {

template <typename F>
void for_each_direction(int64_t D, const F& f) {
  at::parallel_for(0, D, 1, [&](int64_t begin, int64_t end) {
    for (int64_t d = begin; d < end; ++d) f(d);
  });
}

}  // namespace cpu
}  // namespace rnnfast
