// The Python module rnnfast._C: loading it runs every TORCH_LIBRARY registration in this library, and it holds
// direct bindings of the layer-stack ops (elman_rnn, lstm, gru) for the modules' calls.
//
// Why direct bindings: torch.ops' Python entry (its __torch_function__ checks, argument parsing against the
// schema, the boxed call) costs about 6 us a call, as much as the whole Elman stack op at the article's scale
// (batch 1, hidden 1); a pybind11 binding costs about 2. Each binding calls the registered op through the
// dispatcher, with the GIL released as torch.ops does, so everything below the Python entry is the same as a
// torch.ops call: autograd through the layer ops' register_autograd rules, autocast, dispatch modes, the
// backends. rnnfast/_ops.py (call_stack) chooses the entry, keeping torch.ops wherever the binding would hide
// the call from Python: under torch.compile, and when a __torch_function__ override is present.
#include <torch/extension.h>

#include <optional>
#include <tuple>
#include <vector>

namespace rnnfast {
namespace {

using OptTensor = c10::optional<at::Tensor>;

template <typename Signature>
c10::TypedOperatorHandle<Signature> stack_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace
}  // namespace rnnfast

PYBIND11_MODULE(_C, m) {
  using rnnfast::OptTensor;
  using ElmanRnn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, at::TensorList, bool,
                                                      int64_t, double, bool, bool, bool, const OptTensor&);
  using Lstm = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                              const at::Tensor&, at::TensorList, bool, int64_t,
                                                              double, bool, bool, bool, const OptTensor&);
  using Gru = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, at::TensorList, bool,
                                                 int64_t, double, bool, bool, const OptTensor&);
  // The ops' own argument order and meaning: csrc/ops.cpp.
  m.def(
      "elman_rnn",
      [op = rnnfast::stack_op<ElmanRnn>("rnnfast::elman_rnn")](
          const at::Tensor& input, const at::Tensor& hx, const std::vector<at::Tensor>& params, bool has_biases,
          int64_t num_layers, double dropout, bool train, bool bidirectional, bool relu,
          const OptTensor& batch_sizes) {
        return op.call(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, relu, batch_sizes);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "lstm",
      [op = rnnfast::stack_op<Lstm>("rnnfast::lstm")](
          const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx, const std::vector<at::Tensor>& params,
          bool has_biases, int64_t num_layers, double dropout, bool train, bool bidirectional, bool has_projections,
          const OptTensor& batch_sizes) {
        return op.call(input, hx, cx, params, has_biases, num_layers, dropout, train, bidirectional,
                       has_projections, batch_sizes);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "gru",
      [op = rnnfast::stack_op<Gru>("rnnfast::gru")](
          const at::Tensor& input, const at::Tensor& hx, const std::vector<at::Tensor>& params, bool has_biases,
          int64_t num_layers, double dropout, bool train, bool bidirectional, const OptTensor& batch_sizes) {
        return op.call(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_sizes);
      },
      py::call_guard<py::gil_scoped_release>());
}
