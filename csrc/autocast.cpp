// Automatic mixed precision (torch.autocast) for the layer ops. Inside an autocast region torch.nn.RNN, LSTM and
// GRU compute in lower precision, so the forward ops do too: their float32 arguments are cast, as autocast casts
// a matmul's, to the dtype torch.nn computes in there (layer_autocast_dtype), and the op runs below autocast in
// that dtype. The backward ops need no rule: autograd hands them gradients in the forward's dtype.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include <tuple>

namespace rnnfast {
namespace {

// The argument as autocast would cast it for a lower-precision op: float32 tensors of this device type to
// `dtype`; anything else as it is. In the region's own dtype through at::autocast::cached_cast, which reuses a
// weight's cast within one region; in another dtype (cuDNN's float16 under a bfloat16 region) uncached, since
// that cache is keyed by the tensor alone and would hand the float16 copy to the region's other ops.
template <typename T>
const T& cast_for_autocast(const T& arg, at::ScalarType, c10::DeviceType) { return arg; }
at::Tensor cast_for_autocast(const at::Tensor& t, at::ScalarType dtype, c10::DeviceType device) {
  if (dtype == at::autocast::get_autocast_dtype(device)) return at::autocast::cached_cast(dtype, t, device);
  return at::autocast::is_eligible(t, device) ? t.to(dtype) : t;
}
c10::optional<at::Tensor> cast_for_autocast(const c10::optional<at::Tensor>& t, at::ScalarType dtype,
                                            c10::DeviceType device) {
  return t.has_value() ? c10::optional<at::Tensor>(cast_for_autocast(*t, dtype, device)) : c10::nullopt;
}

// The dtype torch.nn's recurrent layers compute in under autocast. On the CPU, and on CUDA without cuDNN, the
// region's (their products are autocast's "lower precision" ops). On CUDA with cuDNN, float16 whatever the
// region's dtype: ATen's autocast rule for _cudnn_rnn (aten/src/ATen/cudnn/AutocastRNN.cpp) casts to half, so
// under a bfloat16 region torch.nn.RNN on CUDA returns float16 (seen on an H200 with torch 2.11).
at::ScalarType layer_autocast_dtype(c10::DeviceType device) {
  if (device == c10::DeviceType::CUDA && at::globalContext().userEnabledCuDNN() && at::Context::hasCuDNN()) {
    return at::kHalf;
  }
  return at::autocast::get_autocast_dtype(device);
}

// The autocast kernel of the op `name` with signature Result(Args...): cast, then call the op below autocast.
template <c10::DeviceType device, const char* name, typename Signature>
struct AutocastRule;

template <c10::DeviceType device, const char* name, typename Result, typename... Args>
struct AutocastRule<device, name, Result(Args...)> {
  static Result call(Args... args) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Result(Args...)>();
    const at::ScalarType dtype = layer_autocast_dtype(device);
    return op.call(cast_for_autocast(args, dtype, device)...);
  }
};

using OptionalTensor = const c10::optional<at::Tensor>&;
using T = const at::Tensor&;
using ElmanForward = std::tuple<at::Tensor, at::Tensor>(T, T, T, T, OptionalTensor, OptionalTensor, bool);
using LstmForward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(T, T, T, T, T, OptionalTensor,
                                                                               OptionalTensor, OptionalTensor, bool);
using GruForward = std::tuple<at::Tensor, at::Tensor, at::Tensor>(T, T, T, T, OptionalTensor, OptionalTensor,
                                                                  OptionalTensor, bool);

constexpr char kElmanForward[] = "rnnfast::elman_layer_forward";
constexpr char kLstmForward[] = "rnnfast::lstm_layer_forward";
constexpr char kGruForward[] = "rnnfast::gru_layer_forward";

}  // namespace
}  // namespace rnnfast

// As torch.nn does: on the CPU its RNN and LSTM run in the lower precision under autocast, its GRU in float32
// (so the GRU op has no CPU rule and runs in its arguments' dtype). On CUDA torch.nn runs all three in float16
// (cuDNN; layer_autocast_dtype), and so do these ops (the gated ones on float32 copies, csrc/widened.h).
TORCH_LIBRARY_IMPL(rnnfast, AutocastCPU, m) {
  using namespace rnnfast;
  m.impl("elman_layer_forward", &AutocastRule<c10::DeviceType::CPU, kElmanForward, ElmanForward>::call);
  m.impl("lstm_layer_forward", &AutocastRule<c10::DeviceType::CPU, kLstmForward, LstmForward>::call);
}

TORCH_LIBRARY_IMPL(rnnfast, AutocastCUDA, m) {
  using namespace rnnfast;
  m.impl("elman_layer_forward", &AutocastRule<c10::DeviceType::CUDA, kElmanForward, ElmanForward>::call);
  m.impl("lstm_layer_forward", &AutocastRule<c10::DeviceType::CUDA, kLstmForward, LstmForward>::call);
  m.impl("gru_layer_forward", &AutocastRule<c10::DeviceType::CUDA, kGruForward, GruForward>::call);
}
