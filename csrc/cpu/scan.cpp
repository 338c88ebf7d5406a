// The CPU scans of the linear recurrences, diagonal and dense, as steps of the chunked scan in chunked_scan.h.
// Both read the coefficients of step s in their time order: forward, coef_t at t = s; adjoint (the backward's
// reverse-time form), coef_{t+1}^T at t = T-1-s, with the identity at s = 0 where no later step exists.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>

#include "../linear_recurrence.h"
#include "chunked_scan.h"

namespace rnnfast {
namespace cpu {
namespace {

// Element-steps a parallel task should get at least, so that splitting channels pays for a task's start.
constexpr int64_t min_task_work = 32768;

template <typename scalar_type>
struct DiagonalSteps {
  using scalar_t = scalar_type;
  const scalar_t* a;  // (T, N), N = B*H channels
  const scalar_t* b;  // (T, N)
  scalar_t* out;      // (T, N)
  int64_t T, N;
  bool adjoint;
  int64_t state_size, map_size, scratch_size;

  DiagonalSteps(const scalar_t* a_, const scalar_t* b_, scalar_t* out_, int64_t T_, int64_t N_, bool adjoint_)
      : a(a_), b(b_), out(out_), T(T_), N(N_), adjoint(adjoint_), state_size(N_), map_size(N_), scratch_size(1) {}

  int64_t time_of(int64_t s) const { return adjoint ? T - 1 - s : s; }
  const scalar_t* coef(int64_t s) const {
    if (!adjoint) return a + s * N;
    return s == 0 ? nullptr : a + (T - s) * N;
  }
  scalar_t* state_at(int64_t s) const { return out + time_of(s) * N; }

  void scan(int64_t s_begin, int64_t s_end, const scalar_t* init, int64_t c_begin, int64_t c_end) const {
    const scalar_t* prev = init;
    for (int64_t s = s_begin; s < s_end; ++s) {
      const scalar_t* c = coef(s);
      const scalar_t* bt = b + time_of(s) * N;
      scalar_t* h = state_at(s);
      if (c != nullptr) {
        for (int64_t n = c_begin; n < c_end; ++n) h[n] = c[n] * prev[n] + bt[n];
      } else {
        for (int64_t n = c_begin; n < c_end; ++n) h[n] = prev[n] + bt[n];
      }
      prev = h;
    }
  }

  void summarize(int64_t s_begin, int64_t s_end, scalar_t* map, scalar_t* end, scalar_t* /*scratch*/) const {
    std::fill_n(map, N, scalar_t(1));
    std::fill_n(end, N, scalar_t(0));
    for (int64_t s = s_begin; s < s_end; ++s) {
      const scalar_t* c = coef(s);  // s >= 1 here: chunk 0 is never summarised
      const scalar_t* bt = b + time_of(s) * N;
      for (int64_t n = 0; n < N; ++n) {
        end[n] = c[n] * end[n] + bt[n];
        map[n] *= c[n];
      }
    }
  }

  void apply(const scalar_t* map, const scalar_t* end, const scalar_t* carry_in, scalar_t* carry_out) const {
    for (int64_t n = 0; n < N; ++n) carry_out[n] = map[n] * carry_in[n] + end[n];
  }
};

template <typename scalar_type>
struct DenseSteps {
  using scalar_t = scalar_type;
  const scalar_t* A;  // (T, B, H, H)
  const scalar_t* b;  // (T, B, H)
  scalar_t* out;      // (T, B, H)
  int64_t T, B, H;
  bool adjoint;
  int64_t state_size, map_size, scratch_size;

  DenseSteps(const scalar_t* A_, const scalar_t* b_, scalar_t* out_, int64_t T_, int64_t B_, int64_t H_,
             bool adjoint_)
      : A(A_), b(b_), out(out_), T(T_), B(B_), H(H_), adjoint(adjoint_), state_size(B_ * H_),
        map_size(B_ * H_ * H_), scratch_size(H_ * H_ + H_) {}

  int64_t time_of(int64_t s) const { return adjoint ? T - 1 - s : s; }
  // Row `row`'s coefficient matrix (H, H) for step s, or nullptr for the identity; read transposed when adjoint.
  const scalar_t* coef(int64_t s, int64_t row) const {
    if (!adjoint) return A + (s * B + row) * H * H;
    return s == 0 ? nullptr : A + ((T - s) * B + row) * H * H;
  }
  scalar_t* state_at(int64_t s) const { return out + time_of(s) * B * H; }

  // y (H) = C x + add, C the step's coefficient (transposed when adjoint, the identity when null).
  void apply_coef(const scalar_t* C, const scalar_t* x, const scalar_t* add, scalar_t* y) const {
    if (C == nullptr) {
      for (int64_t i = 0; i < H; ++i) y[i] = x[i] + add[i];
    } else if (adjoint) {
      std::copy_n(add, H, y);
      for (int64_t j = 0; j < H; ++j) {
        const scalar_t xj = x[j];
        for (int64_t i = 0; i < H; ++i) y[i] += C[j * H + i] * xj;
      }
    } else {
      for (int64_t i = 0; i < H; ++i) {
        scalar_t acc = add[i];
        for (int64_t j = 0; j < H; ++j) acc += C[i * H + j] * x[j];
        y[i] = acc;
      }
    }
  }

  void scan(int64_t s_begin, int64_t s_end, const scalar_t* init, int64_t c_begin, int64_t c_end) const {
    for (int64_t row = c_begin; row < c_end; ++row) {
      const scalar_t* prev = init + row * H;
      for (int64_t s = s_begin; s < s_end; ++s) {
        scalar_t* h = state_at(s) + row * H;
        apply_coef(coef(s, row), prev, b + (time_of(s) * B + row) * H, h);
        prev = h;
      }
    }
  }

  void summarize(int64_t s_begin, int64_t s_end, scalar_t* map, scalar_t* end, scalar_t* scratch) const {
    scalar_t* next_map = scratch;      // (H, H)
    scalar_t* next_end = scratch + H * H;  // (H)
    for (int64_t row = 0; row < B; ++row) {
      scalar_t* P = map + row * H * H;  // (H, H), the steps so far composed
      scalar_t* e = end + row * H;      // (H)
      std::fill_n(P, H * H, scalar_t(0));
      for (int64_t i = 0; i < H; ++i) P[i * H + i] = 1;
      std::fill_n(e, H, scalar_t(0));
      for (int64_t s = s_begin; s < s_end; ++s) {
        const scalar_t* C = coef(s, row);  // s >= 1 here: chunk 0 is never summarised
        apply_coef(C, e, b + (time_of(s) * B + row) * H, next_end);
        // next_map = op(C) P, op the transpose when adjoint; the j loop runs along contiguous rows of P.
        std::fill_n(next_map, H * H, scalar_t(0));
        for (int64_t i = 0; i < H; ++i) {
          for (int64_t k = 0; k < H; ++k) {
            const scalar_t cik = adjoint ? C[k * H + i] : C[i * H + k];
            const scalar_t* Pk = P + k * H;
            scalar_t* Ni = next_map + i * H;
            for (int64_t j = 0; j < H; ++j) Ni[j] += cik * Pk[j];
          }
        }
        std::copy_n(next_map, H * H, P);
        std::copy_n(next_end, H, e);
      }
    }
  }

  void apply(const scalar_t* map, const scalar_t* end, const scalar_t* carry_in, scalar_t* carry_out) const {
    for (int64_t row = 0; row < B; ++row) {
      const scalar_t* P = map + row * H * H;
      for (int64_t i = 0; i < H; ++i) {
        scalar_t acc = end[row * H + i];
        for (int64_t j = 0; j < H; ++j) acc += P[i * H + j] * carry_in[row * H + j];
        carry_out[row * H + i] = acc;
      }
    }
  }
};

int64_t channel_grain(int64_t T, int64_t work_per_channel_step) {
  return std::max<int64_t>(1, min_task_work / std::max<int64_t>(1, T * work_per_channel_step));
}

void diagonal_scan_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& init, at::Tensor& out,
                       bool adjoint) {
  const int64_t T = b.size(0), N = b.size(1) * b.size(2);
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "linear_recurrence_cpu", [&] {
    DiagonalSteps<scalar_t> steps(a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
                                  out.data_ptr<scalar_t>(), T, N, adjoint);
    // Summarising a step costs two multiply-adds against the scan's one.
    chunked_scan(steps, T, N, scan_time_chunks(T, N, 1.0), init.const_data_ptr<scalar_t>(), channel_grain(T, 1));
  });
}

void dense_scan_cpu(const at::Tensor& A, const at::Tensor& b, const at::Tensor& init, at::Tensor& out,
                    bool adjoint) {
  const int64_t T = b.size(0), B = b.size(1), H = b.size(2);
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "dense_linear_recurrence_cpu", [&] {
    DenseSteps<scalar_t> steps(A.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
                               out.data_ptr<scalar_t>(), T, B, H, adjoint);
    // Summarising a step is a matrix product (H^3) against the scan's matrix-vector product (H^2).
    chunked_scan(steps, T, B, scan_time_chunks(T, B, double(H)), init.const_data_ptr<scalar_t>(),
                 channel_grain(T, H * H));
  });
}

}  // namespace
}  // namespace cpu
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CPU, m) {
  rnnfast::register_linear_recurrence_ops<rnnfast::cpu::diagonal_scan_cpu, rnnfast::cpu::dense_scan_cpu>(m);
}
