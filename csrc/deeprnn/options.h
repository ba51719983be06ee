#pragma once

// Options of the deeprnn modules. They carry the same fields, defaults and
// builder-style setters as torch::nn::RNNOptions / GRUOptions / LSTMOptions,
// so that code written for torch::nn reads the same with deeprnn.
//
// Only light headers here: options are included by every user of the
// modules, and <torch/nn/options/rnn.h> would drag in all of <torch/types.h>.

#include <torch/arg.h>
#include <torch/enum.h>

#include <cstdint>
#include <variant>

namespace deeprnn {

/// Options for the `deeprnn::RNN` module (Elman RNN, tanh or ReLU).
///
/// Example:
/// ```
/// deeprnn::RNN rnn(deeprnn::RNNOptions(128, 64)
///                      .num_layers(3)
///                      .dropout(0.2)
///                      .nonlinearity(torch::kReLU));
/// ```
struct RNNOptions {
  /// The very type of `torch::nn::RNNOptions::nonlinearity_t`, so that a
  /// value taken from torch::nn options can be passed on unchanged.
  typedef std::variant<torch::enumtype::kTanh, torch::enumtype::kReLU>
      nonlinearity_t;

  RNNOptions(int64_t input_size, int64_t hidden_size)
      : input_size_(input_size), hidden_size_(hidden_size) {}

  /// The number of expected features in the input `x`.
  TORCH_ARG(int64_t, input_size);
  /// The number of features in the hidden state `h`.
  TORCH_ARG(int64_t, hidden_size);
  /// Number of stacked recurrent layers; layer `l + 1` reads the output of
  /// layer `l`. Default: 1.
  TORCH_ARG(int64_t, num_layers) = 1;
  /// The non-linearity of the cell: `torch::kTanh` or `torch::kReLU`.
  /// Default: `torch::kTanh`.
  TORCH_ARG(nonlinearity_t, nonlinearity) = torch::kTanh;
  /// If `false`, the layers have no bias weights `b_ih` and `b_hh`.
  /// Default: `true`.
  TORCH_ARG(bool, bias) = true;
  /// If `true`, input and output are `(batch, seq, feature)` instead of
  /// `(seq, batch, feature)`. The hidden state is not affected.
  /// Default: `false`.
  TORCH_ARG(bool, batch_first) = false;
  /// If non-zero, dropout with this probability is applied to the output of
  /// every layer except the last one, in training mode only. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// If `true`, every layer runs in both directions and concatenates the
  /// two outputs. Default: `false`.
  TORCH_ARG(bool, bidirectional) = false;
};

/// Options for the `deeprnn::GRU` module.
///
/// Example:
/// ```
/// deeprnn::GRU gru(
///     deeprnn::GRUOptions(2, 4).num_layers(3).bidirectional(true));
/// ```
struct GRUOptions {
  GRUOptions(int64_t input_size, int64_t hidden_size)
      : input_size_(input_size), hidden_size_(hidden_size) {}

  /// The number of expected features in the input `x`.
  TORCH_ARG(int64_t, input_size);
  /// The number of features in the hidden state `h`.
  TORCH_ARG(int64_t, hidden_size);
  /// Number of stacked recurrent layers; layer `l + 1` reads the output of
  /// layer `l`. Default: 1.
  TORCH_ARG(int64_t, num_layers) = 1;
  /// If `false`, the layers have no bias weights `b_ih` and `b_hh`.
  /// Default: `true`.
  TORCH_ARG(bool, bias) = true;
  /// If `true`, input and output are `(batch, seq, feature)` instead of
  /// `(seq, batch, feature)`. The hidden state is not affected.
  /// Default: `false`.
  TORCH_ARG(bool, batch_first) = false;
  /// If non-zero, dropout with this probability is applied to the output of
  /// every layer except the last one, in training mode only. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// If `true`, every layer runs in both directions and concatenates the
  /// two outputs. Default: `false`.
  TORCH_ARG(bool, bidirectional) = false;
};

/// Options for the `deeprnn::LSTM` module.
///
/// Example:
/// ```
/// deeprnn::LSTM lstm(
///     deeprnn::LSTMOptions(2, 4).num_layers(3).bidirectional(true));
/// ```
struct LSTMOptions {
  LSTMOptions(int64_t input_size, int64_t hidden_size)
      : input_size_(input_size), hidden_size_(hidden_size) {}

  /// The number of expected features in the input `x`.
  TORCH_ARG(int64_t, input_size);
  /// The number of features in the cell state `c` (and in the hidden state
  /// `h` when there is no projection).
  TORCH_ARG(int64_t, hidden_size);
  /// Number of stacked recurrent layers; layer `l + 1` reads the output of
  /// layer `l`. Default: 1.
  TORCH_ARG(int64_t, num_layers) = 1;
  /// If `false`, the layers have no bias weights `b_ih` and `b_hh`.
  /// Default: `true`.
  TORCH_ARG(bool, bias) = true;
  /// If `true`, input and output are `(batch, seq, feature)` instead of
  /// `(seq, batch, feature)`. The hidden and cell states are not affected.
  /// Default: `false`.
  TORCH_ARG(bool, batch_first) = false;
  /// If non-zero, dropout with this probability is applied to the output of
  /// every layer except the last one, in training mode only. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// If `true`, every layer runs in both directions and concatenates the
  /// two outputs. Default: `false`.
  TORCH_ARG(bool, bidirectional) = false;
  /// Size of the projection `h = W_hr (o * tanh(c))`; the hidden state and
  /// the output then have `proj_size` features. 0 means no projection.
  /// Must be smaller than `hidden_size`. Default: 0.
  TORCH_ARG(int64_t, proj_size) = 0;
};

} // namespace deeprnn
