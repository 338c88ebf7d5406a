// Every rnnfast operator's schema, in one place, and the Python module that loading the library needs.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import rnnfast._C` loads this shared object, which runs the TORCH_LIBRARY registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

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
  // Whether the CUDA kernels would take their persistent path for this input (T, B, I) and weight_hh (D, H, H)
  // under the current RNNFAST_CUDA_PATH; for tests and benchmarks.
  m.def("elman_cuda_uses_persistent(Tensor input, Tensor weight_hh, bool packed) -> bool");
  // The benchmark floor of a loop over time: `steps` bare products h0 (B, H) @ weight_hh (H, H)^T, one per step,
  // with the BLAS routine the CPU loop uses and nothing else. Returns the products (steps, B, H).
  m.def("recurrence_floor(Tensor h0, Tensor weight_hh, int steps) -> Tensor");
}
