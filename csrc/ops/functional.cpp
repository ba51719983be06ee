// The functional API (<deeprnn/ops.h>) and the backend-agnostic kernels of
// the public operators: without autograd, deeprnn::lstm is _rnn_forward with
// no reserve, on whatever backend the inputs live (CPU, CUDA, Meta).

#include <deeprnn/ops.h>

#include "common/config.h"
#include "ops/dispatch.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace deeprnn {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor, Tensor> lstm_no_grad(
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
  auto out = ops::rnn_forward(
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
      "lstm",
      /*need_reserve=*/false,
      lengths);
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
}

template <Mode kMode>
std::tuple<Tensor, Tensor> simple_no_grad(
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
  auto out = ops::rnn_forward(
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
      mode_name(kMode),
      /*need_reserve=*/false,
      lengths);
  return {std::get<0>(out), std::get<1>(out)};
}

using SimpleSignature = std::tuple<Tensor, Tensor>(
    const Tensor&,
    const std::optional<Tensor>&,
    at::TensorList,
    bool,
    int64_t,
    double,
    bool,
    bool,
    bool,
    const std::optional<Tensor>&);

std::tuple<Tensor, Tensor> call_simple(
    const char* name,
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
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow(name, "")
                .typed<SimpleSignature>();
  return op.call(
      input,
      hx,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
}

} // namespace

std::tuple<Tensor, Tensor, Tensor> lstm(
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
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("deeprnn::lstm", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor>(
                           const Tensor&,
                           const std::optional<Tensor>&,
                           const std::optional<Tensor>&,
                           at::TensorList,
                           bool,
                           int64_t,
                           double,
                           bool,
                           bool,
                           bool,
                           const std::optional<Tensor>&)>();
  return op.call(
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

std::tuple<Tensor, Tensor> gru(
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
  return call_simple(
      "deeprnn::gru",
      input,
      hx,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
}

std::tuple<Tensor, Tensor> rnn_tanh(
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
  return call_simple(
      "deeprnn::rnn_tanh",
      input,
      hx,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
}

std::tuple<Tensor, Tensor> rnn_relu(
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
  return call_simple(
      "deeprnn::rnn_relu",
      input,
      hx,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
}

int64_t reserve_size(
    c10::string_view mode,
    int64_t seq_len,
    int64_t batch,
    int64_t input_size,
    int64_t hidden_size,
    int64_t proj_size,
    int64_t num_layers,
    bool bidirectional,
    bool with_dropout) {
  (void)input_size; // the reserve does not keep the input
  const Mode m = parse_mode(mode);
  TORCH_CHECK(
      seq_len >= 0 && batch >= 0 && hidden_size >= 1 && num_layers >= 1 &&
          proj_size >= 0 && proj_size < hidden_size,
      "deeprnn.reserve_size: expected seq_len >= 0, batch >= 0, "
      "hidden_size >= 1, num_layers >= 1 and 0 <= proj_size < hidden_size, "
      "got seq_len ",
      seq_len,
      ", batch ",
      batch,
      ", hidden_size ",
      hidden_size,
      ", num_layers ",
      num_layers,
      ", proj_size ",
      proj_size);
  TORCH_CHECK(
      proj_size == 0 || m == Mode::LSTM,
      "deeprnn.reserve_size: proj_size is only supported by lstm, got ",
      proj_size,
      " for ",
      std::string(mode));
  const std::string op = "deeprnn.reserve_size";
  // The layers below the last are alike, so the total is a closed form (a
  // loop over an absurd num_layers would never end).
  auto layer = [&](bool is_last) {
    return reserve_layer_layout(
               m,
               seq_len,
               batch,
               hidden_size,
               proj_size > 0 ? proj_size : hidden_size,
               proj_size > 0,
               bidirectional ? 2 : 1,
               is_last,
               with_dropout && num_layers > 1,
               op)
        .size();
  };
  const int64_t below_last =
      num_layers > 1 ? checked_mul(num_layers - 1, layer(false), op) : 0;
  return checked_add(below_last, layer(true), op);
}

namespace ops {

std::tuple<Tensor, Tensor, Tensor, Tensor> rnn_forward(
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
    c10::string_view mode,
    bool need_reserve,
    const std::optional<Tensor>& lengths) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("deeprnn::_rnn_forward", "")
                       .typed<decltype(rnn_forward)>();
  return op.call(
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
      mode,
      need_reserve,
      lengths);
}

std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> rnn_backward(
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
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("deeprnn::_rnn_backward", "")
                       .typed<decltype(rnn_backward)>();
  return op.call(
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
}

} // namespace ops

namespace detail {
int64_t link_anchor() {
  return 1;
}
} // namespace detail

TORCH_LIBRARY_IMPL(deeprnn, CompositeExplicitAutograd, m) {
  m.impl("lstm", &lstm_no_grad);
  m.impl("gru", &simple_no_grad<Mode::GRU>);
  m.impl("rnn_tanh", &simple_no_grad<Mode::RNN_TANH>);
  m.impl("rnn_relu", &simple_no_grad<Mode::RNN_RELU>);
}

TORCH_LIBRARY_IMPL(deeprnn, CompositeImplicitAutograd, m) {
  m.impl("reserve_size", &reserve_size);
}

} // namespace deeprnn
