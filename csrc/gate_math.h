// The gated cells (LSTM, GRU) as descriptions that the shared layer machinery (gated_layer.h) and every backend's
// time loop run: how many gates, what the forward saves, and the pointwise forward and backward of one hidden
// unit at one step. Each is RNNFAST_HOST_DEVICE, so the CPU loops and the CUDA kernels use the same math.
//
// Layout conventions, for one batch row at one step (H hidden units, G gates):
//   gates_x (G*H): x_t W_ih^T plus the bias the layer adds up front; gate k of unit j at [k*H + j];
//   gates_h (G*H): h_{t-1} W_hh^T, without bias;
//   bias_h (G*H): the recurrent bias a cell keeps apart (GRU's b_hh, whose n part sits inside r * (...)), or
//                 nullptr for cells whose biases are all summed into gates_x;
//   workspace (W*H): what the backward needs of this step, quantity k of unit j at [k*H + j].
#pragma once

#include <cstdint>

#include "cell_math.h"

namespace rnnfast {

// What the device-independent layer code needs to know of a cell; the kernels read it from the cell type.
struct CellSpec {
  const char* name;              // for messages, "LSTM" or "GRU"
  int64_t gates;                 // G: gate blocks of H rows in W_ih and W_hh
  int64_t workspace_units;       // W: quantities saved per hidden unit and step for the backward
  bool has_cell_state;           // carries c besides h (LSTM)
  bool bias_h_apart;             // b_hh is not summed into gates_x but applied by the cell (GRU)
  // dL/d(h_{t-1} W_hh^T) differs from dL/d(gates_x) (GRU: the n gate's recurrent term is scaled by r), so the
  // backward keeps it in a buffer of its own.
  bool separate_recurrent_gradient;
  // h_t depends on h_{t-1} other than through W_hh (GRU: z * h_{t-1}); the cell's backward then writes that
  // part of dL/dh_{t-1} and the recurrent product is added onto it.
  bool direct_hidden_path;
  // The forward reads gates_x and gates_h only as their sum, gates_x[k] + gates_h[k] (LSTM). A backend may then
  // add the recurrent product onto gates_x in place and pass the bias the layer sums up front as gates_h, one
  // row for every batch row, rather than write it into every row of gates_x (the CPU loop does).
  bool sums_gates;
};

template <typename scalar_t>
RNNFAST_HOST_DEVICE scalar_t sigmoid(scalar_t x) {
  // sigmoid(x) = (1 + tanh(x/2)) / 2: through tanh_float the float32 loop vectorises, as for the Elman tanh.
  return scalar_t(0.5) + scalar_t(0.5) * ActivationFn<Activation::Tanh>::forward(scalar_t(0.5) * x);
}

template <typename scalar_t>
RNNFAST_HOST_DEVICE scalar_t tanh_of(scalar_t x) {
  return ActivationFn<Activation::Tanh>::forward(x);
}

// torch.nn.LSTM: gates i, f, g, o; c_t = f c_{t-1} + i g; the cell's output m_t = o tanh(c_t) is h_t, or is
// projected to h_t = m_t W_hr^T when proj_size > 0 (the projection is a product the layer's loop does).
struct LstmCell {
  enum Gate : int64_t { kInput, kForget, kCandidate, kOutput };
  // Saved per unit: the four gates after their nonlinearity, c_{t-1}, and tanh(c_t).
  enum Saved : int64_t { kSavedI, kSavedF, kSavedG, kSavedO, kSavedCellPrev, kSavedTanhCell, kSavedCount };
  static constexpr CellSpec spec{"LSTM", 4, kSavedCount, true, false, false, false, true};

  // Returns m_t for unit j and updates c[j] from c_{t-1} to c_t. h_prev and bias_h are unused.
  template <typename scalar_t>
  static RNNFAST_HOST_DEVICE scalar_t forward(const scalar_t* gates_x, const scalar_t* gates_h,
                                              const scalar_t* /*bias_h*/, scalar_t /*h_prev*/, scalar_t* c,
                                              scalar_t* ws, int64_t j, int64_t H) {
    const scalar_t i = sigmoid(gates_x[kInput * H + j] + gates_h[kInput * H + j]);
    const scalar_t f = sigmoid(gates_x[kForget * H + j] + gates_h[kForget * H + j]);
    const scalar_t g = tanh_of(gates_x[kCandidate * H + j] + gates_h[kCandidate * H + j]);
    const scalar_t o = sigmoid(gates_x[kOutput * H + j] + gates_h[kOutput * H + j]);
    const scalar_t c_prev = c[j];
    const scalar_t c_new = f * c_prev + i * g;
    const scalar_t tanh_c = tanh_of(c_new);
    c[j] = c_new;
    ws[kSavedI * H + j] = i;
    ws[kSavedF * H + j] = f;
    ws[kSavedG * H + j] = g;
    ws[kSavedO * H + j] = o;
    ws[kSavedCellPrev * H + j] = c_prev;
    ws[kSavedTanhCell * H + j] = tanh_c;
    return o * tanh_c;
  }

  // grad_m: dL/dm_t for unit j; grad_c[j]: dL/dc_t from the step after on entry, dL/dc_{t-1} on return.
  // Writes dL/d(gates) (pre-nonlinearity) into grad_gates_x, which is also the recurrent product's gradient.
  template <typename scalar_t>
  static RNNFAST_HOST_DEVICE void backward(scalar_t grad_m, scalar_t* grad_c, const scalar_t* ws,
                                           scalar_t /*h_prev*/, scalar_t* grad_gates_x, scalar_t* /*grad_gates_h*/,
                                           scalar_t* /*grad_h_direct*/, int64_t j, int64_t H) {
    const scalar_t i = ws[kSavedI * H + j], f = ws[kSavedF * H + j], g = ws[kSavedG * H + j];
    const scalar_t o = ws[kSavedO * H + j], c_prev = ws[kSavedCellPrev * H + j];
    const scalar_t tanh_c = ws[kSavedTanhCell * H + j];
    const scalar_t dc = grad_c[j] + grad_m * o * (scalar_t(1) - tanh_c * tanh_c);
    grad_c[j] = dc * f;
    grad_gates_x[kInput * H + j] = dc * g * i * (scalar_t(1) - i);
    grad_gates_x[kForget * H + j] = dc * c_prev * f * (scalar_t(1) - f);
    grad_gates_x[kCandidate * H + j] = dc * i * (scalar_t(1) - g * g);
    grad_gates_x[kOutput * H + j] = grad_m * tanh_c * o * (scalar_t(1) - o);
  }
};

// torch.nn.GRU: gates r, z, n; r and z = sigmoid(x W_i^T + b_i + h W_h^T + b_h),
// n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)), h_t = (1 - z) n + z h_{t-1}.
struct GruCell {
  enum Gate : int64_t { kReset, kUpdate, kNew };
  // Saved per unit: r, z, n and the recurrent term of n, h W_hn^T + b_hn (which the output cannot give back).
  enum Saved : int64_t { kSavedR, kSavedZ, kSavedN, kSavedHiddenN, kSavedCount };
  static constexpr CellSpec spec{"GRU", 3, kSavedCount, false, true, true, true, false};

  // Returns h_t for unit j. c is unused; bias_h is never null for this cell.
  template <typename scalar_t>
  static RNNFAST_HOST_DEVICE scalar_t forward(const scalar_t* gates_x, const scalar_t* gates_h,
                                              const scalar_t* bias_h, scalar_t h_prev, scalar_t* /*c*/,
                                              scalar_t* ws, int64_t j, int64_t H) {
    const scalar_t r = sigmoid(gates_x[kReset * H + j] + gates_h[kReset * H + j] + bias_h[kReset * H + j]);
    const scalar_t z = sigmoid(gates_x[kUpdate * H + j] + gates_h[kUpdate * H + j] + bias_h[kUpdate * H + j]);
    const scalar_t hidden_n = gates_h[kNew * H + j] + bias_h[kNew * H + j];
    const scalar_t n = tanh_of(gates_x[kNew * H + j] + r * hidden_n);
    ws[kSavedR * H + j] = r;
    ws[kSavedZ * H + j] = z;
    ws[kSavedN * H + j] = n;
    ws[kSavedHiddenN * H + j] = hidden_n;
    return n + z * (h_prev - n);
  }

  // grad_h: dL/dh_t for unit j. Writes dL/d(gates_x), dL/d(h_{t-1} W_hh^T + b_hh), and the direct part of
  // dL/dh_{t-1}, z * dL/dh_t.
  template <typename scalar_t>
  static RNNFAST_HOST_DEVICE void backward(scalar_t grad_h, scalar_t* /*grad_c*/, const scalar_t* ws,
                                           scalar_t h_prev, scalar_t* grad_gates_x, scalar_t* grad_gates_h,
                                           scalar_t* grad_h_direct, int64_t j, int64_t H) {
    const scalar_t r = ws[kSavedR * H + j], z = ws[kSavedZ * H + j], n = ws[kSavedN * H + j];
    const scalar_t hidden_n = ws[kSavedHiddenN * H + j];
    const scalar_t dn = grad_h * (scalar_t(1) - z) * (scalar_t(1) - n * n);
    const scalar_t dz = grad_h * (h_prev - n) * z * (scalar_t(1) - z);
    const scalar_t dr = dn * hidden_n * r * (scalar_t(1) - r);
    grad_gates_x[kReset * H + j] = dr;
    grad_gates_x[kUpdate * H + j] = dz;
    grad_gates_x[kNew * H + j] = dn;
    grad_gates_h[kReset * H + j] = dr;
    grad_gates_h[kUpdate * H + j] = dz;
    grad_gates_h[kNew * H + j] = dn * r;
    grad_h_direct[j] = grad_h * z;
  }
};

}  // namespace rnnfast
