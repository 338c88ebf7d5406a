// Every rnnfast operator's schema, in one place. (The Python module that loading the library needs, and the
// stack ops' direct bindings, are in python_entry.cpp.)
#include <torch/library.h>

TORCH_LIBRARY(rnnfast, m) {
  // One Elman layer, all its directions (D = 1 or 2, the second running backwards in time):
  //   input (T, B, I), hx (D, B, H), weight_ih (D, H, I), weight_hh (D, H, H), bias = b_ih + b_hh (D, H),
  //   batch_sizes: PackedSequence's (T,) int64 CPU tensor, or None when every row runs all T steps.
  //   Returns output (T, B, D*H) with zeros past each row's length, and h_n (D, B, H).
  m.def(
      "elman_layer_forward(Tensor input, Tensor hx, Tensor weight_ih, Tensor weight_hh, Tensor? bias, "
      "Tensor? batch_sizes, bool relu) -> (Tensor output, Tensor h_n)");
  // Backpropagation through time of elman_layer_forward, given its saved output. grad_bias (D, H) is the
  // gradient of both b_ih and b_hh.
  m.def(
      "elman_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor hx, Tensor weight_ih, "
      "Tensor weight_hh, Tensor output, Tensor? batch_sizes, bool relu) -> (Tensor grad_input, Tensor grad_hx, "
      "Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias)");
  // One LSTM layer, all its directions: input (T, B, I), hx (D, B, P), cx (D, B, H), weight_ih (D, 4H, I),
  // weight_hh (D, 4H, P), bias = b_ih + b_hh (D, 4H), weight_hr (D, P, H) for proj_size = P > 0 (else P = H),
  // batch_sizes as for the Elman op. Gates in torch.nn.LSTM's order i, f, g, o. Returns output (T, B, D*P) with
  // zeros past each row's length, h_n (D, B, P), c_n (D, B, H) and the workspace (T, B, D*6*H) that the backward
  // reads: per direction and unit i, f, g, o, c_{t-1} and tanh(c_t). With save_workspace false (inference) the
  // workspace is not kept, an empty tensor (0,) is returned for it, and the output cannot be differentiated.
  m.def(
      "lstm_layer_forward(Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, Tensor? bias, "
      "Tensor? weight_hr, Tensor? batch_sizes, bool save_workspace=True) -> (Tensor output, Tensor h_n, "
      "Tensor c_n, Tensor workspace)");
  // Backpropagation through time of lstm_layer_forward, given its saved output and workspace. grad_bias (D, 4H)
  // is the gradient of both b_ih and b_hh; grad_weight_hr is empty (shape (0,)) without a projection.
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, Tensor hx, "
      "Tensor cx, Tensor weight_ih, Tensor weight_hh, Tensor? weight_hr, Tensor output, Tensor workspace, "
      "Tensor? batch_sizes) -> (Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_weight_ih, "
      "Tensor grad_weight_hh, Tensor grad_bias, Tensor grad_weight_hr)");
  // One GRU layer, all its directions: input (T, B, I), hx (D, B, H), weight_ih (D, 3H, I), weight_hh (D, 3H, H),
  // bias_ih and bias_hh (D, 3H) both or neither (b_hn sits inside the reset gate's product, so they are not
  // summed). Gates in torch.nn.GRU's order r, z, n. Returns output (T, B, D*H), h_n (D, B, H) and the workspace
  // (T, B, D*4*H): per direction and unit r, z, n and h_{t-1} W_hn^T + b_hn; save_workspace as for the LSTM.
  m.def(
      "gru_layer_forward(Tensor input, Tensor hx, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
      "Tensor? bias_hh, Tensor? batch_sizes, bool save_workspace=True) -> (Tensor output, Tensor h_n, "
      "Tensor workspace)");
  // Backpropagation through time of gru_layer_forward, given its saved output and workspace.
  m.def(
      "gru_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor hx, Tensor weight_ih, "
      "Tensor weight_hh, Tensor output, Tensor workspace, Tensor? batch_sizes) -> (Tensor grad_input, "
      "Tensor grad_hx, Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias_ih, Tensor grad_bias_hh)");
  // Whole stacks of layers, as torch's at::rnn_tanh / at::lstm / at::gru take them: input (T, B, I) time-major,
  // states (L*D, B, .), params in torch.nn's flat order (per layer, per direction: w_ih, w_hh[, b_ih, b_hh]
  // [, w_hr]), dropout between layers when train. Composed of the layer ops above (csrc/layer_stack.cpp).
  // Return the last layer's output and the final states, as the layer ops do.
  m.def(
      "elman_rnn(Tensor input, Tensor hx, Tensor[] params, bool has_biases, int num_layers, float dropout, "
      "bool train, bool bidirectional, bool relu, Tensor? batch_sizes) -> (Tensor output, Tensor h_n)");
  m.def(
      "lstm(Tensor input, Tensor hx, Tensor cx, Tensor[] params, bool has_biases, int num_layers, float dropout, "
      "bool train, bool bidirectional, bool has_projections, Tensor? batch_sizes) -> (Tensor output, "
      "Tensor h_n, Tensor c_n)");
  m.def(
      "gru(Tensor input, Tensor hx, Tensor[] params, bool has_biases, int num_layers, float dropout, bool train, "
      "bool bidirectional, Tensor? batch_sizes) -> (Tensor output, Tensor h_n)");
  // Whether the CUDA kernels would take their persistent path for this input (T, B, I) and weight_hh (D, H, H)
  // under the current RNNFAST_CUDA_PATH; for tests and benchmarks.
  m.def("elman_cuda_uses_persistent(Tensor input, Tensor weight_hh, bool packed) -> bool");
  // The same for a gated layer: cell "LSTM" or "GRU", input (T, B, I), weight_hh (D, G*H, P).
  m.def("gated_cuda_uses_persistent(str cell, Tensor input, Tensor weight_hh, bool packed) -> bool");
  // The benchmark floor of a loop over time: `steps` bare products h0 (B, H) @ weight_hh (N, H)^T, one per step,
  // with the BLAS routine the CPU loops use and nothing else. Returns the products (steps, B, N).
  m.def("recurrence_floor(Tensor h0, Tensor weight_hh, int steps) -> Tensor");

  // The diagonal linear recurrence h_t = a_t * h_{t-1} + b_t over time (dim 0), scanned in parallel:
  //   a, b (T, B, H), h0 (B, H). Returns h (T, B, H).
  m.def("linear_recurrence(Tensor a, Tensor b, Tensor h0) -> Tensor");
  // Its backward, given the forward's h: the reverse-time scan g_t = grad_h_t + a_{t+1} * g_{t+1}.
  //   Returns grad_a = g_t * h_{t-1} (T, B, H), grad_b = g (T, B, H), grad_h0 = a_0 * g_0 (B, H).
  m.def("linear_recurrence_backward(Tensor grad_h, Tensor a, Tensor h, Tensor h0) -> (Tensor grad_a, "
        "Tensor grad_b, Tensor grad_h0)");
  // The linear recurrence with a matrix per step and batch row, h_t = A_t h_{t-1} + b_t:
  //   A (T, B, H, H), b (T, B, H), h0 (B, H). Returns h (T, B, H).
  m.def("dense_linear_recurrence(Tensor A, Tensor b, Tensor h0) -> Tensor");
  // Its backward: the reverse-time scan g_t = grad_h_t + A_{t+1}^T g_{t+1}. Returns grad_A = g_t h_{t-1}^T
  // (T, B, H, H), grad_b = g (T, B, H), grad_h0 = A_0^T g_0 (B, H).
  m.def("dense_linear_recurrence_backward(Tensor grad_h, Tensor A, Tensor h, Tensor h0) -> (Tensor grad_A, "
        "Tensor grad_b, Tensor grad_h0)");
}
