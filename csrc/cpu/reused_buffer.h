// A CPU buffer kept per thread between calls, for an op's internal temporary that never leaves the op (the
// backwards' dL/dz and dL/dgates). Why: a fresh buffer of a megabyte or more is paid for in page faults on every
// call. glibc hands blocks that large to the kernel and back (mmap, or trimming the heap's top), and in a training
// step, where autograd frees the forward's tensors between the ops, it did so every time: at batch 32, hidden 64,
// T 128 the step took 301 minor page faults and about a third longer than the same two ops called back to back
// (3.4 ms against 2.2, AMD EPYC VM). The GRU's training, with its two dL/dgates buffers fresh on every call, was
// 1.02x-1.22x slower at batch 16-32, hidden 64-128 (Intel Xeon VM, one thread). The buffer grows to the largest
// request and is kept up to kMaxReusedBytes.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace rnnfast {
namespace cpu {

constexpr int64_t kMaxReusedBytes = int64_t(64) << 20;

// A contiguous tensor of `sizes` and `options`' dtype on the CPU, uninitialised. Valid until this thread's next
// call: the caller must not let it (or a view of it) escape.
inline at::Tensor reused_buffer(c10::IntArrayRef sizes, const at::TensorOptions& options) {
  thread_local at::Tensor kept;  // (capacity,) of the last dtype asked for
  int64_t numel = 1;
  for (const int64_t size : sizes) numel *= size;
  const int64_t bytes = numel * static_cast<int64_t>(options.dtype().itemsize());
  if (bytes > kMaxReusedBytes) return at::empty(sizes, options);
  if (!kept.defined() || kept.dtype() != options.dtype() || kept.numel() < numel) {
    kept = at::Tensor();  // freed before the larger one is taken, so the two never coexist
    kept = at::empty({numel}, options);
  }
  return kept.narrow(0, 0, numel).view(sizes);
}

}  // namespace cpu
}  // namespace rnnfast
