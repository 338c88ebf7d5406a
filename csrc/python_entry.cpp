// The Python module rnnfast._C: loading it runs every TORCH_LIBRARY registration in this library, and it holds
// direct bindings of the layer-stack ops (elman_rnn, lstm, gru) for the modules' calls.
//
// Why direct bindings: torch.ops' Python entry (its __torch_function__ checks, argument parsing against the
// schema, the boxed call) costs about 6 us a call, as much as the whole Elman stack op at the article's scale
// (batch 1, hidden 1); a pybind11 binding costs about 2. Each binding calls the registered op through the
// dispatcher, with the GIL released and C++ warnings turned into Python ones as torch.ops does, so everything
// below the Python entry is the same as a torch.ops call: autograd through the layer ops' register_autograd
// rules, autocast, dispatch modes, the backends. rnnfast/_ops.py (call_stack) chooses the entry, keeping
// torch.ops wherever the binding would hide the call from Python: under torch.compile, and when a
// __torch_function__ override is present.
#include <torch/csrc/Exceptions.h>
#include <torch/extension.h>

#include <tuple>
#include <vector>

namespace rnnfast {
namespace {

using OptTensor = c10::optional<at::Tensor>;

// How a binding receives an op argument of type T from Python: as is, except a Tensor[] (at::TensorList, a
// view), which pybind11 fills as an owning vector.
template <typename T>
struct FromPython {
  using type = T;
};
template <>
struct FromPython<at::TensorList> {
  using type = const std::vector<at::Tensor>&;
};

template <typename Signature>
struct DirectBinding;

// Binds op `op_name`, whose C++ signature is Result(Args...), as `name` in module m.
template <typename Result, typename... Args>
struct DirectBinding<Result(Args...)> {
  static void bind(py::module_& m, const char* name, const char* op_name) {
    const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(op_name, "").typed<Result(Args...)>();
    m.def(name, [op](typename FromPython<Args>::type... args) -> Result {
      // As torch.ops does: warnings raised in C++ under the op (TORCH_WARN) become Python warnings, issued when
      // the GIL is back; on an error they are reported as C++ warnings instead, and the error propagates.
      torch::PyWarningHandler warnings;
      try {
        py::gil_scoped_release no_gil;
        return op.call(args...);
      } catch (...) {
        warnings.set_in_exception();
        throw;
      }
    });
  }
};

}  // namespace
}  // namespace rnnfast

PYBIND11_MODULE(_C, m) {
  using rnnfast::OptTensor;
  // The ops' own signatures; their arguments' order and meaning: csrc/ops.cpp.
  using ElmanRnn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, at::TensorList, bool,
                                                      int64_t, double, bool, bool, bool, const OptTensor&);
  using Lstm = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                              const at::Tensor&, at::TensorList, bool, int64_t,
                                                              double, bool, bool, bool, const OptTensor&);
  using Gru = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, at::TensorList, bool,
                                                 int64_t, double, bool, bool, const OptTensor&);
  rnnfast::DirectBinding<ElmanRnn>::bind(m, "elman_rnn", "rnnfast::elman_rnn");
  rnnfast::DirectBinding<Lstm>::bind(m, "lstm", "rnnfast::lstm");
  rnnfast::DirectBinding<Gru>::bind(m, "gru", "rnnfast::gru");
}
