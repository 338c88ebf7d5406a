// A chunked parallel scan over time for the CPU, generic over the recurrence's step (diagonal or dense).
//
// The T steps are cut into n chunks. Pass 1, all chunks at once: chunk 0 scans from the initial state and writes
// its outputs; every other chunk composes its steps into one affine map, state_end = P state_begin + e (e the
// chunk's end state from zero). Pass 2, sequentially over the n chunks: each chunk's initial state (its carry)
// from the previous chunk's map. Pass 3, chunks 1..n-1 at once: scan again from the carry, writing the outputs.
// A chunk of k steps costs k steps to summarise and k to scan, so it pays only when the summary is cheap and
// threads are idle; with too few chunks (n = 1) the whole scan runs in pass 1, split over channels instead.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>

namespace rnnfast {
namespace cpu {

// The number of time chunks for a scan of T steps over `channels` independent channels (batch rows or
// units), when composing one step into a chunk's map costs `summary_cost` times a plain step. Time chunks pay
// only when the channels cannot keep the threads busy and n chunks finish sooner than one: the last chunks do
// (1 + summary_cost) times a plain chunk's work, so n - 1 > summary_cost. RNNFAST_SCAN_TIME_CHUNKS overrides
// it (for tests of the chunked path and for measurements).
inline int64_t scan_time_chunks(int64_t T, int64_t channels, double summary_cost) {
  if (const char* forced = std::getenv("RNNFAST_SCAN_TIME_CHUNKS")) {
    const long long n = std::atoll(forced);
    TORCH_CHECK(n >= 1, "rnnfast: RNNFAST_SCAN_TIME_CHUNKS must be a positive integer, got '", forced, "'");
    return std::min<int64_t>(n, T);
  }
  constexpr int64_t min_chunk_steps = 64;
  const int64_t threads = at::get_num_threads();
  if (threads < 2 || channels >= threads || double(threads - 1) <= summary_cost) return 1;
  return std::max<int64_t>(1, std::min(threads, T / min_chunk_steps));
}

// Steps is a recurrence's step, which visits steps s = 0..T-1 in its own time order and provides:
//   scalar_t; state_size (elements of one step's state over all channels); map_size and scratch_size (elements
//   of one chunk's composed map and of the working space composing it, over all channels);
//   scan(s_begin, s_end, init, c_begin, c_end): writes the states of steps [s_begin, s_end), channels
//     [c_begin, c_end), starting from init (a whole state);
//   summarize(s_begin, s_end, map, end, scratch): the composed map and the end state from zero of those steps;
//   apply(map, end, carry_in, carry_out): carry_out = map carry_in + end;
//   state_at(s): the written state of step s.
template <typename Steps>
void chunked_scan(Steps& steps, int64_t T, int64_t channels, int64_t n_chunks,
                  const typename Steps::scalar_t* init, int64_t channel_grain) {
  using scalar_t = typename Steps::scalar_t;
  if (n_chunks <= 1) {
    at::parallel_for(0, channels, channel_grain,
                     [&](int64_t c_begin, int64_t c_end) { steps.scan(0, T, init, c_begin, c_end); });
    return;
  }
  auto chunk_begin = [&](int64_t k) { return k * T / n_chunks; };
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  at::Tensor maps = at::empty({n_chunks, steps.map_size}, options);        // (n, map), row 0 unused
  at::Tensor ends = at::empty({n_chunks, steps.state_size}, options);      // (n, state), row 0 unused
  at::Tensor carries = at::empty({n_chunks, steps.state_size}, options);   // (n, state), row 0 unused
  at::Tensor scratch = at::empty({n_chunks, steps.scratch_size}, options); // (n, scratch)
  scalar_t* map = maps.data_ptr<scalar_t>();
  scalar_t* end = ends.data_ptr<scalar_t>();
  scalar_t* carry = carries.data_ptr<scalar_t>();
  scalar_t* work = scratch.data_ptr<scalar_t>();
  at::parallel_for(0, n_chunks, 1, [&](int64_t k_begin, int64_t k_end) {
    for (int64_t k = k_begin; k < k_end; ++k) {
      if (k == 0) {
        steps.scan(0, chunk_begin(1), init, 0, channels);
      } else {
        steps.summarize(chunk_begin(k), chunk_begin(k + 1), map + k * steps.map_size, end + k * steps.state_size,
                        work + k * steps.scratch_size);
      }
    }
  });
  // carry_1 is chunk 0's last state; carry_{k+1} = map_k carry_k + end_k.
  std::copy_n(steps.state_at(chunk_begin(1) - 1), steps.state_size, carry + steps.state_size);
  for (int64_t k = 1; k + 1 < n_chunks; ++k) {
    steps.apply(map + k * steps.map_size, end + k * steps.state_size, carry + k * steps.state_size,
                carry + (k + 1) * steps.state_size);
  }
  at::parallel_for(1, n_chunks, 1, [&](int64_t k_begin, int64_t k_end) {
    for (int64_t k = k_begin; k < k_end; ++k) {
      steps.scan(chunk_begin(k), chunk_begin(k + 1), carry + k * steps.state_size, 0, channels);
    }
  });
}

}  // namespace cpu
}  // namespace rnnfast
