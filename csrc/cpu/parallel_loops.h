// The independent loops over time of one layer call, and how they are spread over threads. Each direction is a
// loop of its own, and so is each group of batch rows: a row's recurrence never reads another row's state, so a
// group of rows runs its whole loop over time on one thread, with no synchronisation between steps, and every
// row's arithmetic is the same whatever group it falls in (the register tiles compute each row on its own).
// Why: with one loop per direction, a one-directional layer ran on one core whatever torch's thread count, and
// at 2 threads torch.nn.LSTM (oneDNN, which splits every step over its threads) took 0.55x-0.97x of
// rnnfast.LSTM's time at batch 16-64 (BENCHMARKS.md).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../layer_states.h"

namespace rnnfast {
namespace cpu {

// Batch rows [begin, end) of a layer call.
struct RowRange {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

// How many of the rows of `range` run at step t: rows of a packed batch are sorted by length, longest first.
inline int64_t rows_running(const int64_t* batch_sizes, int64_t t, int64_t B, RowRange range) {
  return std::clamp<int64_t>(rows_at(batch_sizes, t, B) - range.begin, 0, range.size());
}

// A group of rows is split off only if its loop has at least this many multiply-adds: starting a thread's share
// of the parallel region costs a few microseconds, which below this the split would not win back.
constexpr int64_t kMinGroupWork = int64_t(1) << 18;
// Nor with fewer rows than the register tiles' height (small_step.cpp's kRows): a thread reads all of a step's
// weights whatever its row count, so below a tile of rows the split adds weight traffic faster than it divides
// the arithmetic (measured: a GRU at batch 2, hidden 256 took 1.1x as long on two one-row groups as on one).
constexpr int64_t kMinGroupRows = 4;

// The batch rows split into contiguous groups, one loop each: as many groups as the threads left to each of the
// D directions, fewer where a group would have too little work (step_work: multiply-adds per row and step) or
// too few rows; a single group where `splittable` is false (a step computed by a BLAS, which splits its own
// products over the threads and whose results may depend on its row count). Groups take equal shares of the
// steps the rows run, so in a packed batch the groups of long rows hold fewer rows.
inline std::vector<RowRange> row_groups(int64_t D, int64_t B, int64_t T, const int64_t* batch_sizes,
                                        int64_t step_work, bool splittable) {
  const bool parallel = splittable && !at::in_parallel_region();
  const int64_t threads_per_direction = parallel ? std::max<int64_t>(1, at::get_num_threads() / D) : 1;
  const int64_t most = std::min(threads_per_direction, B / kMinGroupRows);  // groups the threads and rows allow
  if (most <= 1) return {{0, B}};  // without reading the rows' lengths: the common call on one thread
  std::vector<int64_t> length(B, T);  // (B): the steps each row runs
  if (batch_sizes) {
    std::vector<int64_t> ending(B + 1, 0);  // (B + 1): steps whose batch size is each value
    for (int64_t t = 0; t < T; ++t) ending[batch_sizes[t]] += 1;
    int64_t steps = 0;
    for (int64_t b = B - 1; b >= 0; --b) length[b] = steps += ending[b + 1];
  }
  int64_t total = 0;
  for (const int64_t steps : length) total += steps;
  const int64_t by_work = total * std::max<int64_t>(step_work, 1) / kMinGroupWork;
  const int64_t count = std::max<int64_t>(1, std::min(most, by_work));
  std::vector<RowRange> groups;
  int64_t begin = 0, done = 0;
  for (int64_t g = 0; g < count; ++g) {
    int64_t end = begin;
    const int64_t share = total * (g + 1) / count;
    // At least one row each, and rows left for the groups after this one.
    while (end < B - (count - 1 - g) && (end == begin || done < share)) done += length[end++];
    if (g == count - 1) end = B;
    groups.push_back({begin, end});
    begin = end;
  }
  return groups;
}

// f(d, rows) for every direction d < D and every group of rows, each call on a thread of its own where threads
// are free.
template <typename F>
void for_each_loop(int64_t D, const std::vector<RowRange>& groups, const F& f) {
  const int64_t G = static_cast<int64_t>(groups.size());
  at::parallel_for(0, D * G, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) f(k / G, groups[k % G]);
  });
}

}  // namespace cpu
}  // namespace rnnfast
