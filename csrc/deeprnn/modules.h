#pragma once

// deeprnn::RNN, deeprnn::GRU and deeprnn::LSTM: drop-ins for torch::nn::RNN,
// GRU and LSTM. Same options, same parameter names, order and shapes, same
// forward signatures and the same handling of unbatched (2-D) input, so a
// model can switch by changing the namespace and keep its checkpoints. The
// recurrence itself runs in the deeprnn operators (<deeprnn/ops.h>), reached
// through the dispatcher.

#include <deeprnn/export.h>
#include <deeprnn/options.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/common.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

namespace deeprnn {

// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ RNN ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

/// A multi-layer Elman RNN with tanh or ReLU non-linearity, stacked and
/// optionally bidirectional; behaves like `torch::nn::RNN`.
///
/// Example:
/// ```
/// deeprnn::RNN rnn(deeprnn::RNNOptions(10, 20).num_layers(2));
/// auto [output, h_n] = rnn(torch::randn({5, 3, 10}));
/// ```
class DEEPRNN_API RNNImpl : public torch::nn::Cloneable<RNNImpl> {
 public:
  RNNImpl(int64_t input_size, int64_t hidden_size)
      : RNNImpl(RNNOptions(input_size, hidden_size)) {}
  explicit RNNImpl(const RNNOptions& options_);

  /// Checks the options and (re)creates every parameter, then initialises
  /// them with `reset_parameters()`.
  void reset() override;

  /// Draws every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)),
  /// as torch::nn does.
  void reset_parameters();

  /// Prints e.g. `deeprnn::RNN(input_size=10, hidden_size=20, ...)` with
  /// every option.
  void pretty_print(std::ostream& stream) const override;

  /// input: (seq, batch, input_size), or (batch, seq, input_size) with
  /// batch_first, or (seq, input_size) unbatched.
  /// hx: (num_layers * num_directions, batch, hidden_size), or
  /// (num_layers * num_directions, hidden_size) with unbatched input;
  /// undefined means zeros.
  /// Returns (output, h_n); output has num_directions * hidden_size features.
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& input,
      torch::Tensor hx = {});

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())})

 public:
  /// The parameters, in the order torch::nn has them (`_flat_weights`).
  std::vector<torch::Tensor> all_weights() const;
  /// The parameters as the operators take them; the same list as
  /// `all_weights()`.
  std::vector<torch::Tensor> flat_weights() const;
  /// The names of `flat_weights()`, e.g. `weight_ih_l0`, `bias_hh_l1_reverse`.
  const std::vector<std::string>& flat_weights_names() const {
    return flat_weights_names_;
  }

  /// The options this module was built with.
  RNNOptions options;

 private:
  std::vector<std::string> flat_weights_names_;
};

/// A `ModuleHolder` for `RNNImpl`.
TORCH_MODULE(RNN);

// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ GRU ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

/// A multi-layer gated recurrent unit, stacked and optionally bidirectional;
/// behaves like `torch::nn::GRU`.
///
/// Example:
/// ```
/// deeprnn::GRU gru(deeprnn::GRUOptions(10, 20).bidirectional(true));
/// auto [output, h_n] = gru(torch::randn({5, 3, 10}));
/// ```
class DEEPRNN_API GRUImpl : public torch::nn::Cloneable<GRUImpl> {
 public:
  GRUImpl(int64_t input_size, int64_t hidden_size)
      : GRUImpl(GRUOptions(input_size, hidden_size)) {}
  explicit GRUImpl(const GRUOptions& options_);

  /// Checks the options and (re)creates every parameter, then initialises
  /// them with `reset_parameters()`.
  void reset() override;

  /// Draws every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)),
  /// as torch::nn does.
  void reset_parameters();

  /// Prints e.g. `deeprnn::GRU(input_size=10, hidden_size=20, ...)` with
  /// every option.
  void pretty_print(std::ostream& stream) const override;

  /// Shapes as for `RNNImpl::forward`.
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& input,
      torch::Tensor hx = {});

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())})

 public:
  /// The parameters, in the order torch::nn has them (`_flat_weights`).
  std::vector<torch::Tensor> all_weights() const;
  /// The parameters as the operators take them; the same list as
  /// `all_weights()`.
  std::vector<torch::Tensor> flat_weights() const;
  /// The names of `flat_weights()`, e.g. `weight_ih_l0`, `bias_hh_l1_reverse`.
  const std::vector<std::string>& flat_weights_names() const {
    return flat_weights_names_;
  }

  /// The options this module was built with.
  GRUOptions options;

 private:
  std::vector<std::string> flat_weights_names_;
};

/// A `ModuleHolder` for `GRUImpl`.
TORCH_MODULE(GRU);

// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ LSTM ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

/// A multi-layer long short-term memory, stacked, optionally bidirectional
/// and with an optional projection of the hidden state; behaves like
/// `torch::nn::LSTM`.
///
/// Example:
/// ```
/// deeprnn::LSTM lstm(deeprnn::LSTMOptions(10, 20).num_layers(2));
/// auto [output, state] = lstm(torch::randn({5, 3, 10}));
/// auto [h_n, c_n] = state;
/// ```
class DEEPRNN_API LSTMImpl : public torch::nn::Cloneable<LSTMImpl> {
 public:
  LSTMImpl(int64_t input_size, int64_t hidden_size)
      : LSTMImpl(LSTMOptions(input_size, hidden_size)) {}
  explicit LSTMImpl(const LSTMOptions& options_);

  /// Checks the options and (re)creates every parameter, then initialises
  /// them with `reset_parameters()`.
  void reset() override;

  /// Draws every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)),
  /// as torch::nn does.
  void reset_parameters();

  /// Prints e.g. `deeprnn::LSTM(input_size=10, hidden_size=20, ...)` with
  /// every option.
  void pretty_print(std::ostream& stream) const override;

  /// input: (seq, batch, input_size), or (batch, seq, input_size) with
  /// batch_first, or (seq, input_size) unbatched.
  /// hx_opt: (h_0, c_0) with h_0 (num_layers * num_directions, batch,
  /// proj_size or hidden_size) and c_0 (num_layers * num_directions, batch,
  /// hidden_size); without the batch dimension for unbatched input; absent
  /// means zeros.
  /// Returns (output, (h_n, c_n)); output has
  /// num_directions * (proj_size or hidden_size) features.
  std::tuple<torch::Tensor, std::tuple<torch::Tensor, torch::Tensor>> forward(
      const torch::Tensor& input,
      std::optional<std::tuple<torch::Tensor, torch::Tensor>> hx_opt = {});

 protected:
  FORWARD_HAS_DEFAULT_ARGS(
      {1,
       torch::nn::AnyValue(
           std::optional<std::tuple<torch::Tensor, torch::Tensor>>())})

 public:
  /// The parameters, in the order torch::nn has them (`_flat_weights`).
  std::vector<torch::Tensor> all_weights() const;
  /// The parameters as the operators take them; the same list as
  /// `all_weights()`.
  std::vector<torch::Tensor> flat_weights() const;
  /// The names of `flat_weights()`, e.g. `weight_ih_l0`, `weight_hr_l0`.
  const std::vector<std::string>& flat_weights_names() const {
    return flat_weights_names_;
  }

  /// The options this module was built with.
  LSTMOptions options;

 private:
  std::vector<std::string> flat_weights_names_;
};

/// A `ModuleHolder` for `LSTMImpl`.
TORCH_MODULE(LSTM);

} // namespace deeprnn
