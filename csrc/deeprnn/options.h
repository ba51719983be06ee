#pragma once

// Options of the deeprnn modules. They carry the same fields, defaults and
// builder-style setters as torch::nn::RNNOptions / GRUOptions / LSTMOptions,
// so that code written for torch::nn reads the same with deeprnn.
//
// Beyond torch::nn, and off by default (the defaults build exactly the
// torch::nn module): a hidden size per layer (`hidden_sizes`, and LSTM
// `proj_sizes`), a merge of the two directions other than concatenation
// (`merge_mode`), and last-step output (`return_sequences(false)`). The
// modules compose the operators layer by layer for these; see modules.h.
//
// Only light headers here: options are included by every user of the
// modules, and <torch/nn/options/rnn.h> would drag in all of <torch/types.h>.

#include <deeprnn/export.h>

#include <torch/arg.h>
#include <torch/enum.h>

#include <cstdint>
#include <iosfwd>
#include <variant>
#include <vector>

namespace deeprnn {

/// How a bidirectional layer combines its forward output `f` and reverse
/// output `r` (each `P` features) into the output that feeds the next layer
/// and, for the last layer, the module's output:
/// - `kConcat`: `[f, r]`, `2 * P` features, as torch::nn (the default);
/// - `kSum`: `f + r`; `kMul`: `f * r`; `kAve`: `(f + r) / 2`; `P` features.
/// Anything but `kConcat` needs `bidirectional(true)`.
enum class MergeMode { kConcat, kSum, kMul, kAve };

/// Prints `kConcat`, `kSum`, `kMul` or `kAve`.
DEEPRNN_API std::ostream& operator<<(std::ostream& stream, MergeMode mode);

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
  /// If `true`, every layer runs in both directions and combines the two
  /// outputs as `merge_mode` says (concatenated by default).
  /// Default: `false`.
  TORCH_ARG(bool, bidirectional) = false;
  /// One hidden size per layer, `num_layers` entries, each > 0; layer `l`
  /// then has `hidden_sizes[l]` features and layer `l + 1` reads them (e.g.
  /// `hidden_sizes({3, 2})` with `num_layers(2)`: 3 units, then 2). Empty
  /// (the default) means `hidden_size` for every layer; when set,
  /// `hidden_size` is not used. Unequal sizes give one state tensor per
  /// layer: use `forward_layers`, as `forward` returns one stacked state.
  TORCH_ARG(std::vector<int64_t>, hidden_sizes) = {};
  /// How each bidirectional layer combines its two directions before the
  /// next layer reads them, and how the module's output does: see
  /// `MergeMode`. Anything but `kConcat` needs `bidirectional(true)`.
  /// Default: `MergeMode::kConcat`, as torch::nn.
  TORCH_ARG(MergeMode, merge_mode) = MergeMode::kConcat;
  /// If `false`, the output is the last step only: `(batch, D * P)` with
  /// `kConcat`, `(batch, P)` with another merge (no batch dimension for
  /// unbatched input), P the last layer's output size. The forward half is
  /// the state at each sequence's last valid step (with lengths, its own),
  /// the reverse half the state after reading the whole sequence, i.e. the
  /// last layer's `h_n`. Default: `true` (every step, as torch::nn).
  TORCH_ARG(bool, return_sequences) = true;
};

/// Options for the `deeprnn::GRU` module.
///
/// Example:
/// ```
/// deeprnn::GRU gru(
///     deeprnn::GRUOptions(2, 4).num_layers(3).bidirectional(true));
/// // Two layers of 3 then 2 units, the directions summed, last step only:
/// deeprnn::GRU stack(deeprnn::GRUOptions(2, 3)
///                        .num_layers(2)
///                        .hidden_sizes({3, 2})
///                        .bidirectional(true)
///                        .merge_mode(deeprnn::MergeMode::kSum)
///                        .return_sequences(false));
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
  /// If `true`, every layer runs in both directions and combines the two
  /// outputs as `merge_mode` says (concatenated by default).
  /// Default: `false`.
  TORCH_ARG(bool, bidirectional) = false;
  /// One hidden size per layer, `num_layers` entries, each > 0; layer `l`
  /// then has `hidden_sizes[l]` features and layer `l + 1` reads them (e.g.
  /// `hidden_sizes({3, 2})` with `num_layers(2)`: 3 units, then 2). Empty
  /// (the default) means `hidden_size` for every layer; when set,
  /// `hidden_size` is not used. Unequal sizes give one state tensor per
  /// layer: use `forward_layers`, as `forward` returns one stacked state.
  TORCH_ARG(std::vector<int64_t>, hidden_sizes) = {};
  /// How each bidirectional layer combines its two directions before the
  /// next layer reads them, and how the module's output does: see
  /// `MergeMode`. Anything but `kConcat` needs `bidirectional(true)`.
  /// Default: `MergeMode::kConcat`, as torch::nn.
  TORCH_ARG(MergeMode, merge_mode) = MergeMode::kConcat;
  /// If `false`, the output is the last step only: `(batch, D * P)` with
  /// `kConcat`, `(batch, P)` with another merge (no batch dimension for
  /// unbatched input), P the last layer's output size. The forward half is
  /// the state at each sequence's last valid step (with lengths, its own),
  /// the reverse half the state after reading the whole sequence, i.e. the
  /// last layer's `h_n`. Default: `true` (every step, as torch::nn).
  TORCH_ARG(bool, return_sequences) = true;
};

/// Options for the `deeprnn::LSTM` module.
///
/// Example:
/// ```
/// deeprnn::LSTM lstm(
///     deeprnn::LSTMOptions(2, 4).num_layers(3).bidirectional(true));
/// // Layer 0: 8 cells projected to 4; layer 1: 6 cells, no projection.
/// deeprnn::LSTM stack(deeprnn::LSTMOptions(2, 8)
///                         .num_layers(2)
///                         .hidden_sizes({8, 6})
///                         .proj_sizes({4, 0}));
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
  /// If `true`, every layer runs in both directions and combines the two
  /// outputs as `merge_mode` says (concatenated by default).
  /// Default: `false`.
  TORCH_ARG(bool, bidirectional) = false;
  /// Size of the projection `h = W_hr (o * tanh(c))`; the hidden state and
  /// the output then have `proj_size` features. 0 means no projection.
  /// Must be smaller than `hidden_size`. Default: 0.
  TORCH_ARG(int64_t, proj_size) = 0;
  /// One hidden size per layer, `num_layers` entries, each > 0; layer `l`
  /// then has `hidden_sizes[l]` features and layer `l + 1` reads them (e.g.
  /// `hidden_sizes({3, 2})` with `num_layers(2)`: 3 units, then 2). Empty
  /// (the default) means `hidden_size` for every layer; when set,
  /// `hidden_size` is not used. Unequal sizes give one state tensor per
  /// layer: use `forward_layers`, as `forward` returns one stacked state.
  TORCH_ARG(std::vector<int64_t>, hidden_sizes) = {};
  /// How each bidirectional layer combines its two directions before the
  /// next layer reads them, and how the module's output does: see
  /// `MergeMode`. Anything but `kConcat` needs `bidirectional(true)`.
  /// Default: `MergeMode::kConcat`, as torch::nn.
  TORCH_ARG(MergeMode, merge_mode) = MergeMode::kConcat;
  /// If `false`, the output is the last step only: `(batch, D * P)` with
  /// `kConcat`, `(batch, P)` with another merge (no batch dimension for
  /// unbatched input), P the last layer's output size. The forward half is
  /// the state at each sequence's last valid step (with lengths, its own),
  /// the reverse half the state after reading the whole sequence, i.e. the
  /// last layer's `h_n`. Default: `true` (every step, as torch::nn).
  TORCH_ARG(bool, return_sequences) = true;
  /// One projection size per layer, `num_layers` entries, each `>= 0` and
  /// smaller than that layer's hidden size; 0 leaves that layer without
  /// projection (e.g. `hidden_sizes({8, 6}).proj_sizes({4, 0})`). Empty (the
  /// default) means `proj_size` for every layer; when set, `proj_size` is
  /// not used.
  TORCH_ARG(std::vector<int64_t>, proj_sizes) = {};
};

} // namespace deeprnn
