#pragma once

// deeprnn::RNN, deeprnn::GRU and deeprnn::LSTM: drop-ins for torch::nn::RNN,
// GRU and LSTM. Same options, same parameter names, order and shapes, same
// forward signatures and the same handling of unbatched (2-D) input, so a
// model can switch by changing the namespace and keep its checkpoints. The
// recurrence itself runs in the deeprnn operators (<deeprnn/ops.h>), reached
// through the dispatcher.
//
// Variable-length batches, two ways:
// - forward(input, hx, lengths): padded input plus an int64 tensor of the
//   sequence lengths (B), each in 1..seq, in any order, on the CPU or on the
//   input's device. Steps past a sequence's length do not change its state
//   and give zeros in the output; h_n (and c_n) hold each sequence's state
//   at its last valid step; the reverse direction starts at step length-1.
//   Padded input positions are ignored (their gradient is zero).
// - forward_with_packed_input(packed, hx): a torch::nn::utils::rnn::
//   PackedSequence in, a PackedSequence out, exactly as torch::nn's modules
//   have it. It unpacks into the padded form above (in the packed, sorted
//   order, which the operators run fastest) and packs the output again.
//
// Options beyond torch::nn (options.h): hidden_sizes (and LSTM proj_sizes),
// one size per layer; merge_mode, how a bidirectional layer combines its
// directions; return_sequences(false), the last step only. With the
// defaults, and whenever the sizes are uniform (all hidden sizes equal, all
// projection sizes equal) and merge_mode is kConcat, forward makes the one
// multi-layer operator call it always did: same parameters, states and
// numbers. Otherwise the module calls the operator once per layer
// (num_layers=1, same lengths), merges the two directions of each layer and
// applies dropout to the merged output of every layer but the last, in
// training only; autograd runs through it all.
//
// States with unequal sizes. forward's signature is torch::nn's: one state
// tensor (num_layers * num_directions, batch, P). Layers of different sizes
// cannot share it, so for them forward fails and names forward_layers,
// which takes and returns one state tensor per layer:
//   layer l: h (num_directions, batch, P_l), LSTM c (num_directions, batch,
//   H_l); without the batch dimension for unbatched input;
// H_l = hidden_sizes[l], P_l = proj_sizes[l] or, without projection, H_l.
// forward_layers works for every configuration, uniform ones included
// (where its states are the rows of forward's, layer by layer).
// forward_with_packed_input keeps torch::nn's signature too: it fails for
// unequal sizes (use forward_layers on the padded batch and its lengths) and
// for return_sequences(false), whose (batch, features) output a
// PackedSequence cannot hold (use forward(padded, hx, lengths)).

#include <deeprnn/export.h>
#include <deeprnn/options.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/common.h>
#include <torch/nn/pimpl.h>
#include <torch/nn/utils/rnn.h>
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

  /// Draws every parameter of layer l from U(-1/sqrt(H_l), 1/sqrt(H_l)),
  /// H_l its hidden size, as torch::nn does with its one hidden_size.
  void reset_parameters();

  /// Prints e.g. `deeprnn::RNN(input_size=10, hidden_size=20, ...)` with
  /// every torch::nn option, then those beyond torch::nn that are set
  /// (`hidden_sizes=[3, 2]` in place of hidden_size, merge_mode,
  /// return_sequences).
  void pretty_print(std::ostream& stream) const override;

  /// input: (seq, batch, input_size), or (batch, seq, input_size) with
  /// batch_first, or (seq, input_size) unbatched.
  /// hx: (num_layers * num_directions, batch, hidden_size), or
  /// (num_layers * num_directions, hidden_size) with unbatched input;
  /// undefined means zeros.
  /// lengths: undefined (every sequence runs all seq steps), or int64
  /// (batch) with each length in 1..seq, in any order, on the CPU or on the
  /// input's device; batched input only. Past its length a sequence's output
  /// is zero and its state stays as it was, so h_n is the state at its last
  /// valid step (for the reverse direction, the state after step 0, having
  /// started at step length-1).
  /// Returns (output, h_n); output has num_directions * hidden_size features
  /// (hidden_size with a merge_mode other than kConcat); with
  /// return_sequences(false), only the last step: (batch, features).
  /// With unequal hidden_sizes this fails: use `forward_layers`.
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& input,
      torch::Tensor hx = {},
      const torch::Tensor& lengths = {});

 protected:
  FORWARD_HAS_DEFAULT_ARGS(
      {1, torch::nn::AnyValue(torch::Tensor())},
      {2, torch::nn::AnyValue(torch::Tensor())})

 public:
  /// The same recurrence on a PackedSequence, as torch::nn::RNN has it.
  /// packed_input: data (sum of lengths, input_size), time-major whatever
  /// batch_first says (a PackedSequence has no batch dimension), made by
  /// torch::nn::utils::rnn::pack_padded_sequence or pack_sequence, sorted or
  /// not.
  /// hx: (num_layers * num_directions, batch, hidden_size) in the batch
  /// order the sequences had before packing; undefined means zeros.
  /// Returns (output, h_n): output a PackedSequence with data (sum of
  /// lengths, num_directions * hidden_size) and the input's batch_sizes,
  /// sorted_indices and unsorted_indices; h_n, the state at each sequence's
  /// last valid step, in the batch order of hx. A merge_mode other than
  /// kConcat merges as in `forward`. Fails with unequal hidden_sizes
  /// (states per layer: `forward_layers`) and with return_sequences(false)
  /// (a last-step output is no PackedSequence: pad the input and call
  /// `forward(padded, hx, lengths)`).
  std::tuple<torch::nn::utils::rnn::PackedSequence, torch::Tensor>
  forward_with_packed_input(
      const torch::nn::utils::rnn::PackedSequence& packed_input,
      torch::Tensor hx = {});

  /// forward with one state tensor per layer, for any sizes; required when
  /// `hidden_sizes` are unequal, whose states cannot be stacked.
  /// hx: empty (zeros), or num_layers tensors, layer l (num_directions,
  /// batch, H_l), or (num_directions, H_l) with unbatched input.
  /// Returns (output, h_n) with h_n in the same form as hx.
  ///
  /// Example, the two layers of 3 then 2 units:
  /// ```
  /// deeprnn::RNN stack(
  ///     deeprnn::RNNOptions(4, 3).num_layers(2).hidden_sizes({3, 2}));
  /// auto [output, h_n] = stack->forward_layers(torch::randn({5, 8, 4}));
  /// // output (5, 8, 2); h_n[0] (1, 8, 3), h_n[1] (1, 8, 2)
  /// ```
  std::tuple<torch::Tensor, std::vector<torch::Tensor>> forward_layers(
      const torch::Tensor& input,
      std::vector<torch::Tensor> hx = {},
      const torch::Tensor& lengths = {});

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
  // Layer l's parameters are flat_weights()[layer_begin_[l],
  // layer_begin_[l + 1]): the slice a one-layer operator call takes.
  std::vector<size_t> layer_begin_;
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

  /// Draws every parameter of layer l from U(-1/sqrt(H_l), 1/sqrt(H_l)),
  /// H_l its hidden size, as torch::nn does with its one hidden_size.
  void reset_parameters();

  /// Prints e.g. `deeprnn::GRU(input_size=10, hidden_size=20, ...)` with
  /// every torch::nn option, then those beyond torch::nn that are set
  /// (`hidden_sizes=[3, 2]` in place of hidden_size, merge_mode,
  /// return_sequences).
  void pretty_print(std::ostream& stream) const override;

  /// Shapes, lengths, options and return value as for `RNNImpl::forward`.
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& input,
      torch::Tensor hx = {},
      const torch::Tensor& lengths = {});

 protected:
  FORWARD_HAS_DEFAULT_ARGS(
      {1, torch::nn::AnyValue(torch::Tensor())},
      {2, torch::nn::AnyValue(torch::Tensor())})

 public:
  /// As `RNNImpl::forward_with_packed_input`, like torch::nn::GRU.
  std::tuple<torch::nn::utils::rnn::PackedSequence, torch::Tensor>
  forward_with_packed_input(
      const torch::nn::utils::rnn::PackedSequence& packed_input,
      torch::Tensor hx = {});

  /// forward with one state tensor per layer, for any sizes; required when
  /// `hidden_sizes` are unequal, whose states cannot be stacked.
  /// hx: empty (zeros), or num_layers tensors, layer l (num_directions,
  /// batch, H_l), or (num_directions, H_l) with unbatched input.
  /// Returns (output, h_n) with h_n in the same form as hx.
  ///
  /// Example, the two layers of 3 then 2 units:
  /// ```
  /// deeprnn::GRU stack(
  ///     deeprnn::GRUOptions(4, 3).num_layers(2).hidden_sizes({3, 2}));
  /// auto [output, h_n] = stack->forward_layers(torch::randn({5, 8, 4}));
  /// // output (5, 8, 2); h_n[0] (1, 8, 3), h_n[1] (1, 8, 2)
  /// ```
  std::tuple<torch::Tensor, std::vector<torch::Tensor>> forward_layers(
      const torch::Tensor& input,
      std::vector<torch::Tensor> hx = {},
      const torch::Tensor& lengths = {});

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
  // Layer l's parameters are flat_weights()[layer_begin_[l],
  // layer_begin_[l + 1]): the slice a one-layer operator call takes.
  std::vector<size_t> layer_begin_;
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

  /// Draws every parameter of layer l from U(-1/sqrt(H_l), 1/sqrt(H_l)),
  /// H_l its hidden size, as torch::nn does with its one hidden_size.
  void reset_parameters();

  /// Prints e.g. `deeprnn::LSTM(input_size=10, hidden_size=20, ...)` with
  /// every torch::nn option, then those beyond torch::nn that are set
  /// (`hidden_sizes=[3, 2]` in place of hidden_size, `proj_sizes=[2, 0]`
  /// in place of proj_size, merge_mode, return_sequences).
  void pretty_print(std::ostream& stream) const override;

  /// input: (seq, batch, input_size), or (batch, seq, input_size) with
  /// batch_first, or (seq, input_size) unbatched.
  /// hx_opt: (h_0, c_0) with h_0 (num_layers * num_directions, batch,
  /// proj_size or hidden_size) and c_0 (num_layers * num_directions, batch,
  /// hidden_size); without the batch dimension for unbatched input; absent
  /// means zeros.
  /// lengths: undefined (every sequence runs all seq steps), or int64
  /// (batch) with each length in 1..seq, in any order, on the CPU or on the
  /// input's device; batched input only. Past its length a sequence's output
  /// is zero and its state stays as it was, so h_n and c_n are the states at
  /// its last valid step (for the reverse direction, after step 0, having
  /// started at step length-1).
  /// Returns (output, (h_n, c_n)); output has
  /// num_directions * (proj_size or hidden_size) features (without the
  /// num_directions factor for a merge_mode other than kConcat); with
  /// return_sequences(false), only the last step: (batch, features).
  /// With unequal hidden_sizes or proj_sizes this fails: use
  /// `forward_layers`.
  ///
  /// Example, two sequences of lengths 5 and 3 padded to 5 steps:
  /// ```
  /// auto x = torch::randn({5, 2, 10});
  /// auto lengths = torch::tensor({5, 3}, torch::kLong);
  /// auto [output, state] = lstm->forward(x, {}, lengths);
  /// ```
  std::tuple<torch::Tensor, std::tuple<torch::Tensor, torch::Tensor>> forward(
      const torch::Tensor& input,
      std::optional<std::tuple<torch::Tensor, torch::Tensor>> hx_opt = {},
      const torch::Tensor& lengths = {});

 protected:
  FORWARD_HAS_DEFAULT_ARGS(
      {1,
       torch::nn::AnyValue(
           std::optional<std::tuple<torch::Tensor, torch::Tensor>>())},
      {2, torch::nn::AnyValue(torch::Tensor())})

 public:
  /// The same recurrence on a PackedSequence, as torch::nn::LSTM has it.
  /// packed_input: data (sum of lengths, input_size), time-major whatever
  /// batch_first says (a PackedSequence has no batch dimension), made by
  /// torch::nn::utils::rnn::pack_padded_sequence or pack_sequence, sorted or
  /// not.
  /// hx_opt: (h_0, c_0), shaped as for `forward` with batch = the number of
  /// sequences, in the batch order they had before packing; absent means
  /// zeros.
  /// Returns (output, (h_n, c_n)): output a PackedSequence with data (sum of
  /// lengths, num_directions * (proj_size or hidden_size)) and the input's
  /// batch_sizes, sorted_indices and unsorted_indices; h_n and c_n, the
  /// states at each sequence's last valid step, in the batch order of hx_opt.
  /// A merge_mode other than kConcat merges as in `forward`. Fails with
  /// unequal hidden_sizes or proj_sizes (states per layer:
  /// `forward_layers`) and with return_sequences(false) (a last-step output
  /// is no PackedSequence: pad the input and call
  /// `forward(padded, hx_opt, lengths)`).
  ///
  /// Example:
  /// ```
  /// namespace rnn_utils = torch::nn::utils::rnn;
  /// auto packed = rnn_utils::pack_padded_sequence(
  ///     padded, lengths, /*batch_first=*/false, /*enforce_sorted=*/false);
  /// auto [packed_output, state] = lstm->forward_with_packed_input(packed);
  /// auto [output, output_lengths] =
  ///     rnn_utils::pad_packed_sequence(packed_output);
  /// ```
  std::tuple<
      torch::nn::utils::rnn::PackedSequence,
      std::tuple<torch::Tensor, torch::Tensor>>
  forward_with_packed_input(
      const torch::nn::utils::rnn::PackedSequence& packed_input,
      std::optional<std::tuple<torch::Tensor, torch::Tensor>> hx_opt = {});

  /// forward with one state tensor per layer, for any sizes; required when
  /// `hidden_sizes` or `proj_sizes` are unequal, whose states cannot be
  /// stacked.
  /// hx: absent or two empty lists (zeros), or (h_0, c_0), num_layers
  /// tensors each: layer l h (num_directions, batch, P_l) and c
  /// (num_directions, batch, H_l), without batch for unbatched input.
  /// Returns (output, (h_n, c_n)) with h_n and c_n in the same form.
  ///
  /// Example, the two layers of 3 then 2 units:
  /// ```
  /// deeprnn::LSTM stack(
  ///     deeprnn::LSTMOptions(4, 3).num_layers(2).hidden_sizes({3, 2}));
  /// auto [output, state] = stack->forward_layers(torch::randn({5, 8, 4}));
  /// auto [h_n, c_n] = state; // h_n[0] (1, 8, 3), h_n[1] (1, 8, 2)
  /// ```
  std::tuple<
      torch::Tensor,
      std::tuple<std::vector<torch::Tensor>, std::vector<torch::Tensor>>>
  forward_layers(
      const torch::Tensor& input,
      std::optional<
          std::tuple<std::vector<torch::Tensor>, std::vector<torch::Tensor>>>
          hx = {},
      const torch::Tensor& lengths = {});

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
  // Layer l's parameters are flat_weights()[layer_begin_[l],
  // layer_begin_[l + 1]): the slice a one-layer operator call takes.
  std::vector<size_t> layer_begin_;
};

/// A `ModuleHolder` for `LSTMImpl`.
TORCH_MODULE(LSTM);

} // namespace deeprnn
