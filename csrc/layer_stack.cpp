// The layer stacks of the Elman RNN, LSTM and GRU (layers, directions, dropout between layers), one fused layer op
// call per layer, as torch's own at::rnn_tanh / at::lstm / at::gru take them. Registered CompositeImplicitAutograd:
// the stack is composed of the layer ops, so autograd, autocast, torch.compile and export all see those ops (and
// their rules), and the stack needs no derivative or fake kernel of its own. It exists so that a module call
// crosses from Python into C++ once, not once per layer plus a dozen small tensor operations: at the article's
// scale (batch 1, hidden 1) the Python stack cost several times the kernels.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

namespace rnnfast {
namespace {

// Tensors here are time-major and padded: input (T, B, I); each state (L*D, B, .). params is torch.nn's flat
// order: per layer, per direction, w_ih, w_hh[, b_ih, b_hh][, w_hr].

// Whether autograd has anything to record: with no gradient needed the layer ops are called below autograd,
// skipping their Python autograd wrappers (about 13 us a call) that would only find this out themselves.
bool needs_gradient(const at::Tensor& input, at::TensorList states, at::TensorList params) {
  if (!at::GradMode::is_enabled()) return false;
  if (input.requires_grad()) return true;
  for (const at::Tensor& t : states)
    if (t.requires_grad()) return true;
  for (const at::Tensor& t : params)
    if (t.requires_grad()) return true;
  return false;
}

// One tensor per direction with a leading direction axis: (D, ...). One direction is a view, not a copy.
at::Tensor stack_directions(const std::vector<at::Tensor>& per_direction) {
  return per_direction.size() == 1 ? per_direction[0].unsqueeze(0) : at::stack(per_direction);
}

// The parameters of one layer, for its D directions, in torch.nn's order.
struct LayerParams {
  std::vector<at::Tensor> w_ih, w_hh, b_ih, b_hh, w_hr;  // each D long, or empty when absent
};

LayerParams layer_params(at::TensorList params, int64_t layer, int64_t num_directions, bool has_biases,
                         bool has_projections) {
  const int64_t per_direction = 2 + (has_biases ? 2 : 0) + (has_projections ? 1 : 0);
  TORCH_CHECK(static_cast<int64_t>(params.size()) >= (layer + 1) * num_directions * per_direction,
              "rnnfast: expected ", per_direction, " parameters per layer and direction, got ", params.size(),
              " in all");
  LayerParams p;
  for (int64_t d = 0; d < num_directions; ++d) {
    const int64_t first = (layer * num_directions + d) * per_direction;
    p.w_ih.push_back(params[first]);
    p.w_hh.push_back(params[first + 1]);
    if (has_biases) {
      p.b_ih.push_back(params[first + 2]);
      p.b_hh.push_back(params[first + 3]);
    }
    if (has_projections) p.w_hr.push_back(params[first + per_direction - 1]);
  }
  return p;
}

// b_ih + b_hh per direction, stacked: (D, G*H). For cells that only ever use the two summed.
c10::optional<at::Tensor> summed_bias(const LayerParams& p) {
  if (p.b_ih.empty()) return c10::nullopt;
  std::vector<at::Tensor> sums;
  for (size_t d = 0; d < p.b_ih.size(); ++d) sums.push_back(p.b_ih[d] + p.b_hh[d]);
  return stack_directions(sums);
}

// Runs the layers in turn, dropout between them. run_layer(layer, layer_input, layer_states, differentiable) runs
// one layer, all directions, given each state's (D, B, .) slice, and returns its output and final states;
// differentiable says whether autograd will record it (a gated layer keeps its workspace only then). Returns the
// last layer's output and the final states (L*D, B, .), one per initial state.
template <typename RunLayer>
std::pair<at::Tensor, std::vector<at::Tensor>> run_stack(const at::Tensor& input, std::vector<at::Tensor> states,
                                                         at::TensorList params, int64_t num_layers, double dropout,
                                                         bool train, bool bidirectional, RunLayer run_layer) {
  TORCH_CHECK(num_layers >= 1, "rnnfast: expected num_layers >= 1, got ", num_layers);
  const int64_t D = bidirectional ? 2 : 1;
  // sym_size, not size: under torch.compile a tensor's size(d) reads all its sizes as integers, which would fix
  // the batch size in the compiled graph (a recompilation for every other batch size) to check the first.
  for (const at::Tensor& s : states)
    TORCH_CHECK(s.dim() == 3 && s.sym_size(0) == num_layers * D, "rnnfast: expected each state to be (",
                num_layers * D, ", B, .) for ", num_layers, " layers of ", D, " directions, got ", s.sym_sizes());
  const bool differentiable = needs_gradient(input, states, params);
  std::optional<at::AutoDispatchBelowAutograd> below_autograd;
  if (!differentiable) below_autograd.emplace();
  at::Tensor layer_input = input;
  std::vector<std::vector<at::Tensor>> finals(states.size());  // per state, one (D, B, .) per layer
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    std::vector<at::Tensor> layer_states;
    for (const at::Tensor& s : states) layer_states.push_back(num_layers == 1 ? s : s.narrow(0, layer * D, D));
    auto [output, layer_finals] = run_layer(layer, layer_input, layer_states, differentiable);
    for (size_t i = 0; i < states.size(); ++i) finals[i].push_back(layer_finals[i]);
    if (dropout > 0 && train && layer < num_layers - 1) output = at::dropout(output, dropout, /*train=*/true);
    layer_input = output;
  }
  std::vector<at::Tensor> final_states;
  for (auto& f : finals) final_states.push_back(f.size() == 1 ? f[0] : at::cat(f, 0));
  return {layer_input, final_states};
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> layer_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using OptTensor = c10::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> elman_rnn(const at::Tensor& input, const at::Tensor& hx, at::TensorList params,
                                             bool has_biases, int64_t num_layers, double dropout, bool train,
                                             bool bidirectional, bool relu, const OptTensor& batch_sizes) {
  static const auto op = layer_op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&,
      bool)>("rnnfast::elman_layer_forward");
  const int64_t D = bidirectional ? 2 : 1;
  auto [output, finals] = run_stack(
      input, {hx}, params, num_layers, dropout, train, bidirectional,
      [&](int64_t layer, const at::Tensor& layer_input, const std::vector<at::Tensor>& states, bool) {
        const LayerParams p = layer_params(params, layer, D, has_biases, false);
        auto [out, h_n] = op.call(layer_input, states[0], stack_directions(p.w_ih), stack_directions(p.w_hh),
                                  summed_bias(p), batch_sizes, relu);
        return std::make_pair(out, std::vector<at::Tensor>{h_n});
      });
  return {output, finals[0]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm(const at::Tensor& input, const at::Tensor& hx,
                                                    const at::Tensor& cx, at::TensorList params, bool has_biases,
                                                    int64_t num_layers, double dropout, bool train,
                                                    bool bidirectional, bool has_projections,
                                                    const OptTensor& batch_sizes) {
  static const auto op = layer_op<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
      const OptTensor&, const OptTensor&, bool)>("rnnfast::lstm_layer_forward");
  const int64_t D = bidirectional ? 2 : 1;
  auto [output, finals] = run_stack(
      input, {hx, cx}, params, num_layers, dropout, train, bidirectional,
      [&](int64_t layer, const at::Tensor& layer_input, const std::vector<at::Tensor>& states, bool differentiable) {
        const LayerParams p = layer_params(params, layer, D, has_biases, has_projections);
        const OptTensor w_hr = has_projections ? OptTensor(stack_directions(p.w_hr)) : c10::nullopt;
        auto [out, h_n, c_n, workspace] =
            op.call(layer_input, states[0], states[1], stack_directions(p.w_ih), stack_directions(p.w_hh),
                    summed_bias(p), w_hr, batch_sizes, differentiable);
        return std::make_pair(out, std::vector<at::Tensor>{h_n, c_n});
      });
  return {output, finals[0], finals[1]};
}

std::tuple<at::Tensor, at::Tensor> gru(const at::Tensor& input, const at::Tensor& hx, at::TensorList params,
                                       bool has_biases, int64_t num_layers, double dropout, bool train,
                                       bool bidirectional, const OptTensor& batch_sizes) {
  static const auto op = layer_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&,
      const OptTensor&, bool)>("rnnfast::gru_layer_forward");
  const int64_t D = bidirectional ? 2 : 1;
  auto [output, finals] = run_stack(
      input, {hx}, params, num_layers, dropout, train, bidirectional,
      [&](int64_t layer, const at::Tensor& layer_input, const std::vector<at::Tensor>& states, bool differentiable) {
        const LayerParams p = layer_params(params, layer, D, has_biases, false);
        // Kept apart: b_hn sits inside the reset gate's product.
        const OptTensor b_ih = has_biases ? OptTensor(stack_directions(p.b_ih)) : c10::nullopt;
        const OptTensor b_hh = has_biases ? OptTensor(stack_directions(p.b_hh)) : c10::nullopt;
        auto [out, h_n, workspace] = op.call(layer_input, states[0], stack_directions(p.w_ih),
                                             stack_directions(p.w_hh), b_ih, b_hh, batch_sizes, differentiable);
        return std::make_pair(out, std::vector<at::Tensor>{h_n});
      });
  return {output, finals[0]};
}

}  // namespace
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CompositeImplicitAutograd, m) {
  m.impl("elman_rnn", &rnnfast::elman_rnn);
  m.impl("lstm", &rnnfast::lstm);
  m.impl("gru", &rnnfast::gru);
}
