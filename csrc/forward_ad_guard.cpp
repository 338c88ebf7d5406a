// Forward-mode AD (torch.autograd.forward_ad, torch.func.jvp and jacfwd) has no rule for the fused ops: their
// autograd (torch.library.register_autograd, rnnfast/_ops.py) is reverse mode only. Where no argument requires
// grad, that autograd sends the call on below itself, and the outputs would come back with no tangent: a silent
// zero derivative. This kernel refuses such a call instead, as ATen refuses its own ops without a forward
// derivative. It sits at ADInplaceOrView, the key right below Autograd, because there the arguments still carry
// their tangents: under torch.func.jvp they are the transform's wrappers, which the backend kernels no longer see.
// The rnnfast modules and rnnfast.scan never get here with a tangent: they run a differentiable twin instead
// (rnnfast/_differentiable_twins.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace rnnfast {
namespace {

bool has_tangent(const at::Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }

void refuse_tangents(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  for (const c10::IValue& argument : torch::jit::last(*stack, op.schema().arguments().size())) {
    TORCH_CHECK_NOT_IMPLEMENTED(!(argument.isTensor() && has_tangent(argument.toTensor())), op.schema().name(),
                                " has no forward-mode derivative (forward_ad, torch.func.jvp, jacfwd); the rnnfast "
                                "modules and rnnfast.scan run a differentiable twin of it there");
  }
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
}

}  // namespace
}  // namespace rnnfast

// Every op with a derivative of its own (and the backward ops, which forward-over-reverse would reach).
TORCH_LIBRARY_IMPL(rnnfast, ADInplaceOrView, m) {
  for (const char* op : {"elman_layer_forward", "elman_layer_backward", "lstm_layer_forward", "lstm_layer_backward",
                         "gru_layer_forward", "gru_layer_backward", "linear_recurrence", "linear_recurrence_backward",
                         "dense_linear_recurrence", "dense_linear_recurrence_backward"}) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&rnnfast::refuse_tangents>());
  }
}
