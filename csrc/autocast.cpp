// Automatic mixed precision (torch.autocast) for the layer ops. Inside an autocast region torch.nn.RNN computes
// in the region's lower-precision dtype (its products are autocast's "lower precision" ops), so the forward op
// does too: its float32 arguments are cast to that dtype, as autocast casts a matmul's, and the op runs below
// autocast in that dtype. The backward op needs no rule: autograd hands it gradients in the forward's dtype.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include <tuple>

namespace rnnfast {
namespace {

template <c10::DeviceType device>
std::tuple<at::Tensor, at::Tensor> elman_layer_forward_autocast(const at::Tensor& input, const at::Tensor& hx,
                                                                const at::Tensor& weight_ih,
                                                                const at::Tensor& weight_hh,
                                                                const c10::optional<at::Tensor>& bias,
                                                                const c10::optional<at::Tensor>& batch_sizes,
                                                                bool relu) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
  static const auto op = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("rnnfast::elman_layer_forward", "")
                              .typed<decltype(elman_layer_forward_autocast<device>)>();
  // cached_cast casts only float32 tensors of this device type (as autocast does) and reuses the cast of a
  // weight within one autocast region.
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  const auto cast = [&](const at::Tensor& t) { return at::autocast::cached_cast(dtype, t, device); };
  const c10::optional<at::Tensor> cast_bias = bias.has_value() ? c10::optional<at::Tensor>(cast(*bias)) : c10::nullopt;
  return op.call(cast(input), cast(hx), cast(weight_ih), cast(weight_hh), cast_bias, batch_sizes, relu);
}

}  // namespace
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, AutocastCPU, m) {
  m.impl("elman_layer_forward", &rnnfast::elman_layer_forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(rnnfast, AutocastCUDA, m) {
  m.impl("elman_layer_forward", &rnnfast::elman_layer_forward_autocast<c10::DeviceType::CUDA>);
}
