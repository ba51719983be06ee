// Autograd-key kernels of the public operators, in C++ so that a C++
// program that loads a TorchScript model gets gradients without Python.
//
// deeprnn::lstm (gru, rnn_*) under Autograd: when no gradient can be taken
// it goes straight to _rnn_forward without a reserve. Otherwise an
// autograd::Function runs _rnn_forward with the reserve and its backward
// calls _rnn_backward for exactly the gradients the graph needs. batch_first
// is a transpose outside the Function (as aten::lstm does), so the Function
// only sees time-major tensors and its outputs are never views.

#include "common/config.h"
#include "ops/dispatch.h"

#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

namespace deeprnn {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool present(const std::optional<Tensor>& t) {
  return t.has_value() && t->defined();
}

using BackwardResult = std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>>;

// Arguments of RNNFunction::forward after the parameters (has_biases ...
// mode, lengths); backward returns one (undefined) gradient for each.
constexpr size_t kTrailingArgs = 7;

class RNNFunction : public torch::autograd::Function<RNNFunction> {
 public:
  // input: [T, B, I] time-major. Returns (output [T, B, D*P], hy, cy).
  static variable_list forward(
      AutogradContext* ctx,
      const Tensor& input,
      const std::optional<Tensor>& hx,
      const std::optional<Tensor>& cx,
      at::TensorList params,
      bool has_biases,
      int64_t num_layers,
      double dropout,
      bool train,
      bool bidirectional,
      const std::string& mode,
      const std::optional<Tensor>& lengths) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [output, hy, cy, reserve] = ops::rnn_forward(
        input,
        hx,
        cx,
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        /*batch_first=*/false,
        mode,
        /*need_reserve=*/true,
        lengths);
    ctx->set_materialize_grads(false);
    std::vector<Tensor> to_save = {
        input,
        present(hx) ? *hx : Tensor(),
        present(cx) ? *cx : Tensor(),
        output,
        reserve,
        present(lengths) ? *lengths : Tensor()};
    to_save.insert(to_save.end(), params.begin(), params.end());
    ctx->save_for_backward(to_save);
    ctx->saved_data["has_biases"] = has_biases;
    ctx->saved_data["num_layers"] = num_layers;
    ctx->saved_data["dropout"] = dropout;
    ctx->saved_data["train"] = train;
    ctx->saved_data["bidirectional"] = bidirectional;
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["has_hx"] = present(hx);
    ctx->saved_data["has_cx"] = present(cx);
    if (parse_mode(mode) != Mode::LSTM) {
      ctx->mark_non_differentiable({cy});
    }
    return {output, hy, cy};
  }

  static variable_list backward(
      AutogradContext* ctx,
      variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const bool has_hx = ctx->saved_data["has_hx"].toBool();
    const bool has_cx = ctx->saved_data["has_cx"].toBool();
    const Tensor& input = saved[0];
    const std::vector<Tensor> params(saved.begin() + 6, saved.end());
    const size_t num_params = params.size();

    // Gradient slots follow the forward arguments; edges only the tensors
    // that were given.
    size_t edge = 0;
    const bool need_input = ctx->needs_input_grad(edge++);
    const bool need_hx = has_hx && ctx->needs_input_grad(edge++);
    const bool need_cx = has_cx && ctx->needs_input_grad(edge++);
    std::vector<bool> need_param(num_params);
    bool need_params = false;
    for (size_t i = 0; i < num_params; ++i) {
      need_param[i] = ctx->needs_input_grad(edge++);
      need_params = need_params || need_param[i];
    }

    variable_list grads(3 + num_params + kTrailingArgs);
    auto given = [](const Tensor& t) {
      return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
    };
    const std::optional<Tensor> grad_output = given(grad_outputs[0]);
    const std::optional<Tensor> grad_hy = given(grad_outputs[1]);
    const std::optional<Tensor> grad_cy = given(grad_outputs[2]);
    if (!grad_output && !grad_hy && !grad_cy) {
      return grads;
    }
    auto [grad_input, grad_hx, grad_cx, grad_params] = ops::rnn_backward(
        input,
        given(saved[1]),
        given(saved[2]),
        params,
        saved[3],
        saved[4],
        grad_output,
        grad_hy,
        grad_cy,
        ctx->saved_data["has_biases"].toBool(),
        ctx->saved_data["num_layers"].toInt(),
        ctx->saved_data["dropout"].toDouble(),
        ctx->saved_data["train"].toBool(),
        ctx->saved_data["bidirectional"].toBool(),
        /*batch_first=*/false,
        ctx->saved_data["mode"].toStringRef(),
        {need_input, need_hx, need_cx, need_params},
        given(saved[5]));
    if (need_input) {
      grads[0] = grad_input;
    }
    if (need_hx) {
      grads[1] = grad_hx;
    }
    if (need_cx) {
      grads[2] = grad_cx;
    }
    for (size_t i = 0; i < num_params; ++i) {
      if (need_param[i]) {
        grads[3 + i] = grad_params[i];
      }
    }
    return grads;
  }
};

std::tuple<Tensor, Tensor, Tensor> rnn_autograd(
    Mode mode,
    const Tensor& input,
    const std::optional<Tensor>& hx,
    const std::optional<Tensor>& cx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    const std::optional<Tensor>& lengths) {
  // An undefined input goes on to the kernel, whose check names it.
  bool any_requires_grad = (input.defined() && input.requires_grad()) ||
      (present(hx) && hx->requires_grad()) ||
      (present(cx) && cx->requires_grad());
  for (const auto& p : params) {
    any_requires_grad = any_requires_grad || p.requires_grad();
  }
  if (!(torch::autograd::GradMode::is_enabled() && any_requires_grad)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [output, hy, cy, reserve] = ops::rnn_forward(
        input,
        hx,
        cx,
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
        mode_name(mode),
        /*need_reserve=*/false,
        lengths);
    return {output, hy, cy};
  }
  // Checked here, in the caller's layout, before the transpose: the errors
  // then describe the tensors the caller passed (the kernel below sees only
  // the time-major view).
  check_rnn_args_symbolic(
      mode,
      input,
      hx,
      cx,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
  const Tensor time_major = batch_first ? input.transpose(0, 1) : input;
  auto outs = RNNFunction::apply(
      time_major,
      hx,
      cx,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      std::string(mode_name(mode)),
      lengths);
  Tensor output = batch_first ? outs[0].transpose(0, 1) : outs[0];
  return {output, outs[1], outs[2]};
}

std::tuple<Tensor, Tensor, Tensor> lstm_autograd(
    const Tensor& input,
    const std::optional<Tensor>& hx,
    const std::optional<Tensor>& cx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    const std::optional<Tensor>& lengths) {
  return rnn_autograd(
      Mode::LSTM,
      input,
      hx,
      cx,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
}

template <Mode kMode>
std::tuple<Tensor, Tensor> simple_autograd(
    const Tensor& input,
    const std::optional<Tensor>& hx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    const std::optional<Tensor>& lengths) {
  auto [output, hy, cy] = rnn_autograd(
      kMode,
      input,
      hx,
      std::nullopt,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
  return {output, hy};
}

// _rnn_backward under Autograd: computes the gradients, and when a graph of
// them is being built (create_graph=True) attaches a node that fails with a
// clear message if anyone differentiates through them.
BackwardResult rnn_backward_autograd(
    const Tensor& input,
    const std::optional<Tensor>& hx,
    const std::optional<Tensor>& cx,
    at::TensorList params,
    const Tensor& output,
    const Tensor& reserve,
    const std::optional<Tensor>& grad_output,
    const std::optional<Tensor>& grad_hy,
    const std::optional<Tensor>& grad_cy,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    c10::string_view mode,
    std::array<bool, 4> output_mask,
    const std::optional<Tensor>& lengths) {
  BackwardResult result = [&] {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops::rnn_backward(
        input,
        hx,
        cx,
        params,
        output,
        reserve,
        grad_output,
        grad_hy,
        grad_cy,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
        mode,
        output_mask,
        lengths);
  }();
  if (!torch::autograd::GradMode::is_enabled()) {
    return result;
  }
  variable_list differentiable = {input, output};
  for (const auto* t : {&hx, &cx, &grad_output, &grad_hy, &grad_cy}) {
    if (present(*t)) {
      differentiable.push_back(**t);
    }
  }
  differentiable.insert(differentiable.end(), params.begin(), params.end());
  bool any_requires_grad = false;
  for (const auto& t : differentiable) {
    any_requires_grad = any_requires_grad || t.requires_grad();
  }
  if (!any_requires_grad) {
    return result;
  }
  auto error = c10::make_intrusive<torch::autograd::Error>(
      "deeprnn." + std::string(mode) +
          ": double backward is not supported yet (the gradients of "
          "deeprnn's RNN operators are not differentiable)",
      torch::autograd::collect_next_edges(differentiable));
  auto attach = [&](const Tensor& t) {
    if (t.defined()) {
      torch::autograd::set_history(t, error);
    }
  };
  attach(std::get<0>(result));
  attach(std::get<1>(result));
  attach(std::get<2>(result));
  for (const auto& g : std::get<3>(result)) {
    attach(g);
  }
  return result;
}

} // namespace

TORCH_LIBRARY_IMPL(deeprnn, Autograd, m) {
  m.impl("lstm", &lstm_autograd);
  m.impl("gru", &simple_autograd<Mode::GRU>);
  m.impl("rnn_tanh", &simple_autograd<Mode::RNN_TANH>);
  m.impl("rnn_relu", &simple_autograd<Mode::RNN_RELU>);
  m.impl("_rnn_backward", &rnn_backward_autograd);
  m.impl("_rnn_forward", torch::autograd::autogradNotImplementedFallback());
}

} // namespace deeprnn
