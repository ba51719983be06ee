// The options beyond torch::nn in the C++ modules (issue 9): a hidden size
// (and LSTM projection size) per layer, merge modes for the two directions,
// last-step output. Checked against a stack of one-layer torch::nn modules
// holding the same weights, run layer by layer with the merge, the last step
// and (with lengths) the packing done by hand in this file; float64,
// outputs, states and the gradients of input, states and every parameter.
// Then: uniform sizes given per layer are the int configuration exactly,
// bad options and states, printing, parameters, clone and containers.

#include <deeprnn/deeprnn.h>

#include "test_helpers.h"

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using deeprnn::MergeMode;
using deeprnn_test::fresh_leaf;
using deeprnn_test::tensors_close;
using deeprnn_test::throws_matching;
using torch::Tensor;
namespace rnn_utils = torch::nn::utils::rnn;

using LSTMState = std::optional<std::tuple<Tensor, Tensor>>;
using LSTMLayerState =
    std::optional<std::tuple<std::vector<Tensor>, std::vector<Tensor>>>;

// The new method's signatures, as documented in modules.h.
static_assert(std::is_same_v<
              decltype(std::declval<deeprnn::LSTMImpl&>().forward_layers(
                  std::declval<Tensor>())),
              std::tuple<
                  Tensor,
                  std::tuple<std::vector<Tensor>, std::vector<Tensor>>>>);
static_assert(std::is_same_v<
              decltype(std::declval<deeprnn::GRUImpl&>().forward_layers(
                  std::declval<Tensor>())),
              std::tuple<Tensor, std::vector<Tensor>>>);

enum class Mode { kLSTM, kGRU, kRNNTanh, kRNNReLU };

struct Config {
  Mode mode;
  std::vector<int64_t> hidden; // one per layer
  std::vector<int64_t> proj; // LSTM: one per layer, or empty for none
  bool bidirectional;
  MergeMode merge;
  bool return_sequences;
  bool batch_first;
  bool with_lengths;
  bool with_state;
  bool bias = true;
  // Through forward with stacked states instead of forward_layers; uniform
  // sizes only.
  bool stacked = false;

  int64_t num_layers() const {
    return static_cast<int64_t>(hidden.size());
  }
  int64_t num_directions() const {
    return bidirectional ? 2 : 1;
  }
  int64_t proj_of(int64_t layer) const {
    return proj.empty() ? 0 : proj[layer];
  }
  int64_t output_of(int64_t layer) const {
    return proj_of(layer) > 0 ? proj_of(layer) : hidden[layer];
  }
  int64_t merged_of(int64_t layer) const {
    return merge == MergeMode::kConcat ? num_directions() * output_of(layer)
                                       : output_of(layer);
  }
};

std::string describe(const Config& c) {
  static const char* const modes[] = {"LSTM", "GRU", "RNN(tanh)", "RNN(relu)"};
  std::ostringstream stream;
  stream << modes[static_cast<int>(c.mode)] << " hidden=[";
  for (size_t i = 0; i < c.hidden.size(); ++i) {
    stream << (i ? "," : "") << c.hidden[i];
  }
  stream << "] proj=[";
  for (size_t i = 0; i < c.proj.size(); ++i) {
    stream << (i ? "," : "") << c.proj[i];
  }
  stream << "] bidirectional=" << c.bidirectional << " merge=" << c.merge
         << " return_sequences=" << c.return_sequences
         << " batch_first=" << c.batch_first << " lengths=" << c.with_lengths
         << " state=" << c.with_state << " bias=" << c.bias
         << " stacked=" << c.stacked;
  return stream.str();
}

struct Result {
  Tensor output;
  std::vector<Tensor> h; // per layer (D, B, P_l)
  std::vector<Tensor> c; // LSTM: per layer (D, B, H_l)
};

using Run = std::function<Result(
    const Tensor& input,
    const std::vector<Tensor>& h0,
    const std::vector<Tensor>& c0,
    const Tensor& lengths)>;

struct Built {
  std::shared_ptr<torch::nn::Module> module;
  Run run;
};

// ---------------------------------------------------------------------------
// deeprnn: one module for the whole stack.

template <typename Options>
Options with_layers(const Config& c, Options options) {
  return options.num_layers(c.num_layers())
      .hidden_sizes(c.hidden)
      .bidirectional(c.bidirectional)
      .merge_mode(c.merge)
      .return_sequences(c.return_sequences)
      .batch_first(c.batch_first)
      .bias(c.bias);
}

template <typename Impl>
Built single_state_deeprnn(std::shared_ptr<Impl> impl, const Config& c) {
  Run run = [impl, c](
                const Tensor& x,
                const std::vector<Tensor>& h0,
                const std::vector<Tensor>&,
                const Tensor& lengths) {
    if (c.stacked) {
      auto [output, hy] =
          impl->forward(x, h0.empty() ? Tensor() : torch::cat(h0), lengths);
      return Result{output, hy.split(c.num_directions()), {}};
    }
    auto [output, hy] = impl->forward_layers(x, h0, lengths);
    return Result{output, hy, {}};
  };
  return {impl, run};
}

Built make_deeprnn(const Config& c, int64_t input_size) {
  switch (c.mode) {
    case Mode::kLSTM: {
      auto options =
          with_layers(c, deeprnn::LSTMOptions(input_size, c.hidden[0]));
      if (!c.proj.empty()) {
        options.proj_sizes(c.proj);
      }
      auto impl = std::make_shared<deeprnn::LSTMImpl>(options);
      Run run = [impl, c](
                    const Tensor& x,
                    const std::vector<Tensor>& h0,
                    const std::vector<Tensor>& c0,
                    const Tensor& lengths) {
        if (c.stacked) {
          LSTMState state;
          if (!h0.empty()) {
            state = std::make_tuple(torch::cat(h0), torch::cat(c0));
          }
          auto [output, final_state] = impl->forward(x, state, lengths);
          return Result{
              output,
              std::get<0>(final_state).split(c.num_directions()),
              std::get<1>(final_state).split(c.num_directions())};
        }
        LSTMLayerState state;
        if (!h0.empty()) {
          state = std::make_tuple(h0, c0);
        }
        auto [output, final_state] = impl->forward_layers(x, state, lengths);
        return Result{
            output, std::get<0>(final_state), std::get<1>(final_state)};
      };
      return {impl, run};
    }
    case Mode::kGRU:
      return single_state_deeprnn(
          std::make_shared<deeprnn::GRUImpl>(
              with_layers(c, deeprnn::GRUOptions(input_size, c.hidden[0]))),
          c);
    case Mode::kRNNTanh:
    case Mode::kRNNReLU:
      break;
  }
  auto options = with_layers(c, deeprnn::RNNOptions(input_size, c.hidden[0]));
  if (c.mode == Mode::kRNNReLU) {
    options.nonlinearity(torch::kReLU);
  }
  return single_state_deeprnn(std::make_shared<deeprnn::RNNImpl>(options), c);
}

// ---------------------------------------------------------------------------
// The reference: one single-layer torch::nn module per layer. With lengths,
// each layer packs its padded input (unsorted), runs
// forward_with_packed_input and pads the output back to all the steps.

using LayerRun = std::function<std::tuple<Tensor, Tensor, Tensor>(
    const Tensor& input,
    const Tensor& h0,
    const Tensor& c0,
    const Tensor& lengths)>;

struct ReferenceLayer {
  std::shared_ptr<torch::nn::Module> module;
  LayerRun run;
};

template <typename Options>
Options one_layer(const Config& c, Options options) {
  return options.num_layers(1)
      .bidirectional(c.bidirectional)
      .batch_first(c.batch_first)
      .bias(c.bias);
}

Tensor pad_back(
    const rnn_utils::PackedSequence& packed,
    bool batch_first,
    int64_t steps) {
  return std::get<0>(
      rnn_utils::pad_packed_sequence(packed, batch_first, 0.0, steps));
}

rnn_utils::PackedSequence pack(
    const Tensor& input,
    const Tensor& lengths,
    bool batch_first) {
  return rnn_utils::pack_padded_sequence(
      input, lengths, batch_first, /*enforce_sorted=*/false);
}

template <typename Impl>
ReferenceLayer single_state_reference(std::shared_ptr<Impl> impl, bool bf) {
  LayerRun run = [impl, bf](
                     const Tensor& x,
                     const Tensor& h0,
                     const Tensor&,
                     const Tensor& lengths) {
    if (!lengths.defined()) {
      auto [output, hy] = impl->forward(x, h0);
      return std::make_tuple(output, hy, Tensor());
    }
    auto [packed, hy] =
        impl->forward_with_packed_input(pack(x, lengths, bf), h0);
    return std::make_tuple(
        pad_back(packed, bf, x.size(bf ? 1 : 0)), hy, Tensor());
  };
  return {impl, run};
}

ReferenceLayer make_reference_layer(
    const Config& c,
    int64_t layer,
    int64_t input_size) {
  const int64_t hidden = c.hidden[layer];
  const bool bf = c.batch_first;
  switch (c.mode) {
    case Mode::kLSTM: {
      auto impl = std::make_shared<torch::nn::LSTMImpl>(
          one_layer(c, torch::nn::LSTMOptions(input_size, hidden))
              .proj_size(c.proj_of(layer)));
      LayerRun run = [impl, bf](
                         const Tensor& x,
                         const Tensor& h0,
                         const Tensor& c0,
                         const Tensor& lengths) {
        LSTMState state;
        if (h0.defined()) {
          state = std::make_tuple(h0, c0);
        }
        if (!lengths.defined()) {
          auto [output, final_state] = impl->forward(x, state);
          return std::make_tuple(
              output, std::get<0>(final_state), std::get<1>(final_state));
        }
        auto [packed, final_state] =
            impl->forward_with_packed_input(pack(x, lengths, bf), state);
        return std::make_tuple(
            pad_back(packed, bf, x.size(bf ? 1 : 0)),
            std::get<0>(final_state),
            std::get<1>(final_state));
      };
      return {impl, run};
    }
    case Mode::kGRU:
      return single_state_reference(
          std::make_shared<torch::nn::GRUImpl>(
              one_layer(c, torch::nn::GRUOptions(input_size, hidden))),
          bf);
    case Mode::kRNNTanh:
    case Mode::kRNNReLU:
      break;
  }
  auto options = one_layer(c, torch::nn::RNNOptions(input_size, hidden));
  if (c.mode == Mode::kRNNReLU) {
    options.nonlinearity(torch::kReLU);
  }
  return single_state_reference(
      std::make_shared<torch::nn::RNNImpl>(options), bf);
}

Tensor merge_by_hand(const Tensor& output, MergeMode merge, int64_t width) {
  if (merge == MergeMode::kConcat) {
    return output;
  }
  const Tensor forward = output.narrow(-1, 0, width);
  const Tensor reverse = output.narrow(-1, width, width);
  switch (merge) {
    case MergeMode::kSum:
      return forward + reverse;
    case MergeMode::kMul:
      return forward * reverse;
    case MergeMode::kAve:
      return (forward + reverse) / 2;
    case MergeMode::kConcat:
      break;
  }
  return Tensor();
}

// The last step read off the last layer's unmerged output (not off h_n, as
// the module does): the forward half at each sequence's last valid step,
// the reverse half at step 0, where the reverse direction ends.
Tensor last_step_by_hand(
    const Config& c,
    const Tensor& raw_output,
    const Tensor& lengths) {
  const Tensor time_major =
      c.batch_first ? raw_output.transpose(0, 1) : raw_output;
  const int64_t steps = time_major.size(0);
  const int64_t batch = time_major.size(1);
  const int64_t width = c.output_of(c.num_layers() - 1);
  std::vector<Tensor> forward_rows;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t last =
        lengths.defined() ? lengths[b].item<int64_t>() - 1 : steps - 1;
    forward_rows.push_back(time_major[last][b].narrow(0, 0, width));
  }
  const Tensor forward = torch::stack(forward_rows);
  if (!c.bidirectional) {
    return forward;
  }
  const Tensor reverse = time_major[0].narrow(-1, width, width);
  if (c.merge == MergeMode::kConcat) {
    return torch::cat({forward, reverse}, -1);
  }
  return merge_by_hand(torch::cat({forward, reverse}, -1), c.merge, width);
}

struct Reference {
  std::vector<ReferenceLayer> layers;

  Result run(
      const Config& c,
      const Tensor& x,
      const std::vector<Tensor>& h0,
      const std::vector<Tensor>& c0,
      const Tensor& lengths) const {
    Result result;
    Tensor layer_input = x;
    Tensor raw_output;
    for (int64_t layer = 0; layer < c.num_layers(); ++layer) {
      auto [output, hy, cy] = layers[layer].run(
          layer_input,
          h0.empty() ? Tensor() : h0[layer],
          c0.empty() ? Tensor() : c0[layer],
          lengths);
      raw_output = output;
      layer_input = merge_by_hand(output, c.merge, c.output_of(layer));
      result.h.push_back(hy);
      if (cy.defined()) {
        result.c.push_back(cy);
      }
    }
    result.output = c.return_sequences
        ? layer_input
        : last_step_by_hand(c, raw_output, lengths);
    return result;
  }
};

// torch::nn's layer l parameter `weight_ih_l0_reverse` is deeprnn's
// `weight_ih_l{l}_reverse`.
std::string deeprnn_name(const std::string& reference_name, int64_t layer) {
  const auto at = reference_name.find("_l0");
  return reference_name.substr(0, at) + "_l" + std::to_string(layer) +
      reference_name.substr(at + 3);
}

Reference make_reference(
    const Config& c,
    int64_t input_size,
    const torch::nn::Module& deeprnn_module) {
  Reference reference;
  const auto source = deeprnn_module.named_parameters();
  size_t copied = 0;
  torch::NoGradGuard no_grad;
  for (int64_t layer = 0; layer < c.num_layers(); ++layer) {
    const int64_t layer_input =
        layer == 0 ? input_size : c.merged_of(layer - 1);
    ReferenceLayer built = make_reference_layer(c, layer, layer_input);
    built.module->to(torch::kDouble);
    for (auto& item : built.module->named_parameters()) {
      const std::string name = deeprnn_name(item.key(), layer);
      const Tensor* from = source.find(name);
      EXPECT_NE(from, nullptr) << "deeprnn has no parameter " << name;
      if (from == nullptr) {
        continue;
      }
      EXPECT_EQ(from->sizes(), item.value().sizes()) << name;
      item.value().copy_(*from);
      ++copied;
    }
    reference.layers.push_back(std::move(built));
  }
  EXPECT_EQ(copied, source.size()) << "deeprnn has parameters torch::nn lacks";
  return reference;
}

// ---------------------------------------------------------------------------
// The comparison.

constexpr int64_t kSteps = 5;
constexpr int64_t kBatch = 3;
constexpr int64_t kInput = 4;

// A loss that reaches every output and every state with its own random
// weights, so that each gradient path is checked on its own.
Tensor loss_of(const Result& result, const std::vector<Tensor>& weights) {
  Tensor loss = (result.output * weights[0]).sum();
  size_t next = 1;
  for (const auto& h : result.h) {
    loss = loss + (h * weights[next++]).sum();
  }
  for (const auto& c : result.c) {
    loss = loss + (c * weights[next++]).sum();
  }
  return loss;
}

std::vector<Tensor> fresh_leaves(const std::vector<Tensor>& tensors) {
  std::vector<Tensor> leaves;
  for (const auto& tensor : tensors) {
    leaves.push_back(fresh_leaf(tensor));
  }
  return leaves;
}

void check_against_reference(const Config& c) {
  SCOPED_TRACE(describe(c));
  Built built = make_deeprnn(c, kInput);
  built.module->to(torch::kDouble);
  const Reference reference = make_reference(c, kInput, *built.module);

  const auto options = torch::TensorOptions().dtype(torch::kDouble);
  const Tensor x = c.batch_first
      ? torch::randn({kBatch, kSteps, kInput}, options)
      : torch::randn({kSteps, kBatch, kInput}, options);
  // Unsorted, one full length.
  const Tensor lengths = c.with_lengths
      ? torch::tensor(std::vector<int64_t>{kSteps - 2, kSteps, 2})
      : Tensor();
  std::vector<Tensor> h0;
  std::vector<Tensor> c0;
  if (c.with_state) {
    for (int64_t layer = 0; layer < c.num_layers(); ++layer) {
      h0.push_back(torch::randn(
          {c.num_directions(), kBatch, c.output_of(layer)}, options));
      if (c.mode == Mode::kLSTM) {
        c0.push_back(torch::randn(
            {c.num_directions(), kBatch, c.hidden[layer]}, options));
      }
    }
  }

  const Tensor x_deeprnn = fresh_leaf(x);
  const Tensor x_reference = fresh_leaf(x);
  const std::vector<Tensor> h0_deeprnn = fresh_leaves(h0);
  const std::vector<Tensor> h0_reference = fresh_leaves(h0);
  const std::vector<Tensor> c0_deeprnn = fresh_leaves(c0);
  const std::vector<Tensor> c0_reference = fresh_leaves(c0);

  const Result expected =
      reference.run(c, x_reference, h0_reference, c0_reference, lengths);
  const Result actual = built.run(x_deeprnn, h0_deeprnn, c0_deeprnn, lengths);

  ASSERT_TRUE(tensors_close(actual.output, expected.output)) << "output";
  ASSERT_EQ(actual.h.size(), expected.h.size());
  ASSERT_EQ(actual.c.size(), expected.c.size());
  for (size_t layer = 0; layer < expected.h.size(); ++layer) {
    EXPECT_TRUE(tensors_close(actual.h[layer], expected.h[layer]))
        << "h_n of layer " << layer;
  }
  for (size_t layer = 0; layer < expected.c.size(); ++layer) {
    EXPECT_TRUE(tensors_close(actual.c[layer], expected.c[layer]))
        << "c_n of layer " << layer;
  }

  std::vector<Tensor> weights = {torch::randn_like(expected.output)};
  for (const auto& h : expected.h) {
    weights.push_back(torch::randn_like(h));
  }
  for (const auto& cell : expected.c) {
    weights.push_back(torch::randn_like(cell));
  }
  loss_of(expected, weights).backward();
  loss_of(actual, weights).backward();

  EXPECT_TRUE(tensors_close(x_deeprnn.grad(), x_reference.grad()))
      << "input gradient";
  for (size_t layer = 0; layer < h0.size(); ++layer) {
    EXPECT_TRUE(
        tensors_close(h0_deeprnn[layer].grad(), h0_reference[layer].grad()))
        << "h_0 gradient of layer " << layer;
  }
  for (size_t layer = 0; layer < c0.size(); ++layer) {
    EXPECT_TRUE(
        tensors_close(c0_deeprnn[layer].grad(), c0_reference[layer].grad()))
        << "c_0 gradient of layer " << layer;
  }
  const auto deeprnn_parameters = built.module->named_parameters();
  for (int64_t layer = 0; layer < c.num_layers(); ++layer) {
    for (const auto& item :
         reference.layers[layer].module->named_parameters()) {
      const std::string name = deeprnn_name(item.key(), layer);
      EXPECT_TRUE(
          tensors_close(deeprnn_parameters[name].grad(), item.value().grad()))
          << "gradient of " << name;
    }
  }
}

// Every mode, uni and bi, every merge mode, both return_sequences, with and
// without lengths; unequal sizes through forward_layers.
TEST(LayersModule, UnequalSizesMatchAStackOfTorchNNLayers) {
  torch::manual_seed(11);
  const Mode modes[] = {Mode::kLSTM, Mode::kGRU, Mode::kRNNTanh};
  const std::pair<bool, MergeMode> directions[] = {
      {false, MergeMode::kConcat},
      {true, MergeMode::kConcat},
      {true, MergeMode::kSum},
      {true, MergeMode::kMul},
      {true, MergeMode::kAve}};
  int index = 0;
  for (const Mode mode : modes) {
    for (const auto& [bidirectional, merge] : directions) {
      for (const bool return_sequences : {true, false}) {
        for (const bool with_lengths : {false, true}) {
          Config c{
              mode,
              {5, 3, 4},
              {},
              bidirectional,
              merge,
              return_sequences,
              /*batch_first=*/index % 3 == 1,
              with_lengths,
              /*with_state=*/index % 2 == 0};
          check_against_reference(c);
          ++index;
        }
      }
    }
  }
}

// Per-layer projections (one layer without), uni and bi, every merge mode.
TEST(LayersModule, LSTMWithPerLayerProjectionMatches) {
  torch::manual_seed(12);
  const std::pair<bool, MergeMode> directions[] = {
      {false, MergeMode::kConcat},
      {true, MergeMode::kConcat},
      {true, MergeMode::kSum},
      {true, MergeMode::kMul},
      {true, MergeMode::kAve}};
  int index = 0;
  for (const auto& [bidirectional, merge] : directions) {
    for (const bool with_lengths : {false, true}) {
      Config c{
          Mode::kLSTM,
          {6, 4, 5},
          {3, 0, 2},
          bidirectional,
          merge,
          /*return_sequences=*/index % 2 == 1,
          /*batch_first=*/index % 4 == 2,
          with_lengths,
          /*with_state=*/index % 3 != 1};
      check_against_reference(c);
      ++index;
    }
  }
  // The same projection size in every layer: uniform, so also through
  // forward's stacked states.
  for (const bool stacked : {false, true}) {
    Config c{
        Mode::kLSTM,
        {5, 5},
        {3, 3},
        true,
        MergeMode::kAve,
        true,
        false,
        true,
        true};
    c.stacked = stacked;
    check_against_reference(c);
  }
}

// Uniform sizes with a merge: forward's stacked states are the layers'
// states one after the other; forward_layers gives them per layer, also in
// the fused (concat) case; ReLU and no bias ride along.
TEST(LayersModule, UniformSizesThroughBothForwards) {
  torch::manual_seed(13);
  const Mode modes[] = {
      Mode::kLSTM, Mode::kGRU, Mode::kRNNTanh, Mode::kRNNReLU};
  int index = 0;
  for (const Mode mode : modes) {
    for (const MergeMode merge : {MergeMode::kConcat, MergeMode::kMul}) {
      for (const bool stacked : {false, true}) {
        Config c{
            mode,
            {4, 4},
            {},
            true,
            merge,
            /*return_sequences=*/index % 3 != 2,
            /*batch_first=*/index % 2 == 1,
            /*with_lengths=*/index % 4 < 2,
            /*with_state=*/true,
            /*bias=*/mode != Mode::kRNNReLU};
        c.stacked = stacked;
        check_against_reference(c);
        ++index;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Shapes the spec fixes, unbatched input and the packed form.

TEST(LayersModule, ReturnSequencesFalseShapes) {
  torch::manual_seed(14);
  const Tensor x = torch::randn({3, 6, 2}); // batch_first: (B, T, I)
  const Tensor lengths = torch::tensor({6, 2, 4}, torch::kLong);
  deeprnn::LSTM concat(deeprnn::LSTMOptions(2, 3)
                           .num_layers(2)
                           .hidden_sizes({3, 5})
                           .proj_sizes({0, 2})
                           .bidirectional(true)
                           .batch_first(true)
                           .return_sequences(false));
  auto [last, state] = concat->forward_layers(x, std::nullopt, lengths);
  EXPECT_EQ(last.sizes(), torch::IntArrayRef({3, 4})); // (B, D * P_last)
  EXPECT_EQ(std::get<0>(state)[1].sizes(), torch::IntArrayRef({2, 3, 2}));
  EXPECT_EQ(std::get<1>(state)[1].sizes(), torch::IntArrayRef({2, 3, 5}));

  deeprnn::GRU sum(deeprnn::GRUOptions(2, 3)
                       .num_layers(2)
                       .bidirectional(true)
                       .merge_mode(MergeMode::kSum)
                       .return_sequences(false));
  auto [sum_last, sum_hy] = sum->forward(x.transpose(0, 1));
  EXPECT_EQ(sum_last.sizes(), torch::IntArrayRef({3, 3})); // (B, P)
  EXPECT_EQ(sum_hy.sizes(), torch::IntArrayRef({4, 3, 3})); // stacked
  EXPECT_TRUE(tensors_close(sum_last, sum_hy[2] + sum_hy[3], 1e-6));
}

// One sequence without its batch dimension is the batch of one, squeezed:
// output, last step and every layer's state.
TEST(LayersModule, UnbatchedInputIsABatchOfOne) {
  torch::manual_seed(15);
  for (const bool return_sequences : {true, false}) {
    SCOPED_TRACE(return_sequences);
    deeprnn::LSTM lstm(deeprnn::LSTMOptions(3, 4)
                           .num_layers(2)
                           .hidden_sizes({4, 3})
                           .proj_sizes({2, 0})
                           .bidirectional(true)
                           .merge_mode(MergeMode::kAve)
                           .return_sequences(return_sequences));
    const Tensor x = torch::randn({5, 3});
    const std::vector<Tensor> h0 = {torch::randn({2, 2}), torch::randn({2, 3})};
    const std::vector<Tensor> c0 = {torch::randn({2, 4}), torch::randn({2, 3})};
    auto [output, state] = lstm->forward_layers(x, std::make_tuple(h0, c0));
    std::vector<Tensor> h0_batched;
    std::vector<Tensor> c0_batched;
    for (int layer = 0; layer < 2; ++layer) {
      h0_batched.push_back(h0[layer].unsqueeze(1));
      c0_batched.push_back(c0[layer].unsqueeze(1));
    }
    auto [batched, batched_state] = lstm->forward_layers(
        x.unsqueeze(1), std::make_tuple(h0_batched, c0_batched));
    EXPECT_EQ(
        output.sizes(),
        return_sequences ? torch::IntArrayRef({5, 3})
                         : torch::IntArrayRef({3}));
    EXPECT_TRUE(
        tensors_close(output, batched.squeeze(return_sequences ? 1 : 0), 1e-6));
    for (int layer = 0; layer < 2; ++layer) {
      EXPECT_TRUE(tensors_close(
          std::get<0>(state)[layer],
          std::get<0>(batched_state)[layer].squeeze(1),
          1e-6));
      EXPECT_TRUE(tensors_close(
          std::get<1>(state)[layer],
          std::get<1>(batched_state)[layer].squeeze(1),
          1e-6));
    }
  }
  // forward's stacked 2-D state with a merge (uniform sizes).
  deeprnn::RNN rnn(
      deeprnn::RNNOptions(3, 4).num_layers(2).bidirectional(true).merge_mode(
          MergeMode::kSum));
  const Tensor x = torch::randn({5, 3});
  const Tensor h0 = torch::randn({4, 4});
  auto [output, hy] = rnn->forward(x, h0);
  auto [batched, batched_hy] = rnn->forward(x.unsqueeze(1), h0.unsqueeze(1));
  EXPECT_EQ(output.sizes(), torch::IntArrayRef({5, 4}));
  EXPECT_TRUE(tensors_close(output, batched.squeeze(1), 1e-6));
  EXPECT_TRUE(tensors_close(hy, batched_hy.squeeze(1), 1e-6));
}

// Uniform sizes with a merge run the packed form too (in the packed order,
// states in the caller's): the same as forward on the padded batch.
TEST(LayersModule, PackedInputWithAMergeEqualsForwardWithLengths) {
  torch::manual_seed(16);
  deeprnn::LSTM lstm(
      deeprnn::LSTMOptions(3, 4).num_layers(2).bidirectional(true).merge_mode(
          MergeMode::kMul));
  const Tensor x = torch::randn({6, 3, 3});
  const Tensor lengths = torch::tensor({3, 6, 5}, torch::kLong);
  const Tensor h0 = torch::randn({4, 3, 4});
  const Tensor c0 = torch::randn({4, 3, 4});
  auto [packed, packed_state] = lstm->forward_with_packed_input(
      pack(x, lengths, false), std::make_tuple(h0, c0));
  auto [padded, padded_state] =
      lstm->forward(x, std::make_tuple(h0, c0), lengths);
  EXPECT_EQ(packed.data().size(1), 4);
  EXPECT_TRUE(tensors_close(pad_back(packed, false, 6), padded, 1e-6));
  EXPECT_TRUE(tensors_close(
      std::get<0>(packed_state), std::get<0>(padded_state), 1e-6));
  EXPECT_TRUE(tensors_close(
      std::get<1>(packed_state), std::get<1>(padded_state), 1e-6));
}

// ---------------------------------------------------------------------------
// Dropout between layers, on the merged outputs, in training only.

TEST(LayersModule, DropoutOnMergedOutputsBetweenLayersInTrainingOnly) {
  const Config c{
      Mode::kGRU,
      {4, 3, 2},
      {},
      true,
      MergeMode::kSum,
      true,
      false,
      false,
      false};
  deeprnn::GRU gru(deeprnn::GRUOptions(kInput, 4)
                       .num_layers(3)
                       .hidden_sizes({4, 3, 2})
                       .bidirectional(true)
                       .merge_mode(MergeMode::kSum)
                       .dropout(0.5));
  gru->to(torch::kDouble);
  const Reference reference = make_reference(c, kInput, *gru);
  const Tensor x = torch::randn({kSteps, kBatch, kInput}, torch::kDouble);

  // Training: torch::dropout with the global generator after layers 0 and
  // 1, so the same seed gives the same masks by hand.
  torch::manual_seed(17);
  auto [output, hy] = gru->forward_layers(x);
  torch::manual_seed(17);
  Tensor layer_input = x;
  std::vector<Tensor> expected_h;
  for (int64_t layer = 0; layer < 3; ++layer) {
    auto [raw, h, unused] =
        reference.layers[layer].run(layer_input, Tensor(), Tensor(), Tensor());
    layer_input = merge_by_hand(raw, MergeMode::kSum, c.hidden[layer]);
    if (layer < 2) {
      layer_input = torch::dropout(layer_input, 0.5, /*train=*/true);
    }
    expected_h.push_back(h);
  }
  EXPECT_TRUE(tensors_close(output, layer_input));
  for (int64_t layer = 0; layer < 3; ++layer) {
    EXPECT_TRUE(tensors_close(hy[layer], expected_h[layer])) << layer;
  }

  // Evaluation: no dropout at all.
  gru->eval();
  auto [eval_output, eval_hy] = gru->forward_layers(x);
  const Result plain = reference.run(c, x, {}, {}, Tensor());
  EXPECT_TRUE(tensors_close(eval_output, plain.output));
}

// ---------------------------------------------------------------------------
// Uniform sizes given per layer are the int configuration exactly: the same
// parameters from the same seed, the same numbers out.

bool equal_states(const Tensor& a, const Tensor& b) {
  return torch::equal(a, b);
}

bool equal_states(
    const std::tuple<Tensor, Tensor>& a,
    const std::tuple<Tensor, Tensor>& b) {
  return torch::equal(std::get<0>(a), std::get<0>(b)) &&
      torch::equal(std::get<1>(a), std::get<1>(b));
}

template <typename Holder, typename Options>
void expect_identical_modules(const Options& scalar, const Options& per_layer) {
  torch::manual_seed(21);
  Holder a(scalar);
  torch::manual_seed(21);
  Holder b(per_layer);
  const auto a_parameters = a->named_parameters();
  const auto b_parameters = b->named_parameters();
  ASSERT_EQ(a_parameters.keys(), b_parameters.keys());
  for (const auto& item : a_parameters) {
    EXPECT_TRUE(torch::equal(item.value(), b_parameters[item.key()]))
        << item.key();
  }
  const Tensor x = torch::randn({5, 3, 2});
  const Tensor lengths = torch::tensor({5, 1, 3}, torch::kLong);
  auto [a_output, a_state] = a->forward(x, {}, lengths);
  auto [b_output, b_state] = b->forward(x, {}, lengths);
  EXPECT_TRUE(torch::equal(a_output, b_output));
  EXPECT_TRUE(equal_states(a_state, b_state));
}

TEST(LayersModule, UniformListsEqualTheIntConfiguration) {
  const auto lstm =
      deeprnn::LSTMOptions(2, 5).num_layers(3).bidirectional(true);
  expect_identical_modules<deeprnn::LSTM>(
      deeprnn::LSTMOptions(lstm).proj_size(3),
      deeprnn::LSTMOptions(lstm).hidden_sizes({5, 5, 5}).proj_sizes({3, 3, 3}));
  expect_identical_modules<deeprnn::GRU>(
      deeprnn::GRUOptions(2, 4).num_layers(2),
      deeprnn::GRUOptions(2, 99).num_layers(2).hidden_sizes({4, 4}));
  expect_identical_modules<deeprnn::RNN>(
      deeprnn::RNNOptions(2, 4).num_layers(2).nonlinearity(torch::kReLU),
      deeprnn::RNNOptions(2, 4)
          .num_layers(2)
          .nonlinearity(torch::kReLU)
          .hidden_sizes({4, 4}));
}

// ---------------------------------------------------------------------------
// Parameters: torch::nn's names, per-layer shapes, per-layer init bounds.

TEST(LayersModule, ParameterNamesShapesAndInit) {
  torch::manual_seed(22);
  deeprnn::LSTM lstm(deeprnn::LSTMOptions(7, 1)
                         .num_layers(2)
                         .hidden_sizes({100, 4})
                         .proj_sizes({0, 2})
                         .bidirectional(true)
                         .merge_mode(MergeMode::kSum));
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"weight_ih_l0", {400, 7}},
      {"weight_hh_l0", {400, 100}},
      {"bias_ih_l0", {400}},
      {"bias_hh_l0", {400}},
      {"weight_ih_l0_reverse", {400, 7}},
      {"weight_hh_l0_reverse", {400, 100}},
      {"bias_ih_l0_reverse", {400}},
      {"bias_hh_l0_reverse", {400}},
      // Layer 1 reads the sum of layer 0's directions: 100 features.
      {"weight_ih_l1", {16, 100}},
      {"weight_hh_l1", {16, 2}},
      {"bias_ih_l1", {16}},
      {"bias_hh_l1", {16}},
      {"weight_hr_l1", {2, 4}},
      {"weight_ih_l1_reverse", {16, 100}},
      {"weight_hh_l1_reverse", {16, 2}},
      {"bias_ih_l1_reverse", {16}},
      {"bias_hh_l1_reverse", {16}},
      {"weight_hr_l1_reverse", {2, 4}},
  };
  const auto parameters = lstm->named_parameters();
  ASSERT_EQ(parameters.size(), expected.size());
  ASSERT_EQ(lstm->flat_weights_names().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(parameters.keys()[i], expected[i].first);
    EXPECT_EQ(lstm->flat_weights_names()[i], expected[i].first);
    EXPECT_EQ(
        parameters.values()[i].sizes(), torch::IntArrayRef(expected[i].second))
        << expected[i].first;
  }
  // U(-1/sqrt(H_l), 1/sqrt(H_l)): 0.1 for layer 0, 0.5 for layer 1, whose
  // 1000-odd draws all staying within 0.1 would take a miracle.
  double layer0_max = 0.0;
  double layer1_max = 0.0;
  for (const auto& item : parameters) {
    const double max = item.value().abs().max().item<double>();
    if (item.key().find("_l0") != std::string::npos) {
      layer0_max = std::max(layer0_max, max);
    } else {
      layer1_max = std::max(layer1_max, max);
    }
  }
  EXPECT_LE(layer0_max, 0.1);
  EXPECT_GT(layer0_max, 0.09);
  EXPECT_LE(layer1_max, 0.5);
  EXPECT_GT(layer1_max, 0.3);

  // reset_parameters draws again, with the same bounds.
  const Tensor before = lstm->named_parameters()["weight_hh_l1"].clone();
  lstm->reset_parameters();
  const Tensor after = lstm->named_parameters()["weight_hh_l1"];
  EXPECT_FALSE(torch::equal(before, after));
  EXPECT_LE(after.abs().max().item<double>(), 0.5);
  EXPECT_LE(
      lstm->named_parameters()["weight_ih_l0"].abs().max().item<double>(), 0.1);
}

// ---------------------------------------------------------------------------
// Errors: bad options at construction, the stacked-state methods with
// unequal sizes, and bad per-layer states.

TEST(LayersModule, BadOptionsAreRefused) {
  EXPECT_TRUE(throws_matching(
      [] {
        deeprnn::LSTM(
            deeprnn::LSTMOptions(2, 3).num_layers(3).hidden_sizes({3, 2}));
      },
      "^deeprnn::LSTM: hidden_sizes must have one entry per layer "
      "\\(num_layers=3\\), got 2: \\[3, 2\\]$"));
  EXPECT_TRUE(throws_matching(
      [] {
        deeprnn::GRU(
            deeprnn::GRUOptions(2, 3).num_layers(2).hidden_sizes({3, 0}));
      },
      "^deeprnn::GRU: hidden_sizes\\[1\\] must be > 0, got 0$"));
  EXPECT_TRUE(throws_matching(
      [] {
        deeprnn::RNN(
            deeprnn::RNNOptions(2, 3).num_layers(2).hidden_sizes({-4, 3}));
      },
      "^deeprnn::RNN: hidden_sizes\\[0\\] must be > 0, got -4$"));
  EXPECT_TRUE(throws_matching(
      [] {
        deeprnn::LSTM(
            deeprnn::LSTMOptions(2, 3).num_layers(2).proj_sizes({1, 1, 1}));
      },
      "^deeprnn::LSTM: proj_sizes must have one entry per layer "
      "\\(num_layers=2\\), got 3: \\[1, 1, 1\\]$"));
  EXPECT_TRUE(throws_matching(
      [] {
        deeprnn::LSTM(deeprnn::LSTMOptions(2, 3)
                          .num_layers(2)
                          .hidden_sizes({5, 3})
                          .proj_sizes({4, 3}));
      },
      "^deeprnn::LSTM: proj_sizes\\[1\\] must be >= 0 and smaller than the "
      "layer's hidden size \\(3\\), got 3$"));
  EXPECT_TRUE(throws_matching(
      [] {
        deeprnn::LSTM(
            deeprnn::LSTMOptions(2, 3).num_layers(2).proj_sizes({-1, 0}));
      },
      "^deeprnn::LSTM: proj_sizes\\[0\\] must be >= 0 and smaller than the "
      "layer's hidden size \\(3\\), got -1$"));
  EXPECT_TRUE(throws_matching(
      [] {
        deeprnn::LSTM(deeprnn::LSTMOptions(2, 3)
                          .num_layers(2)
                          .hidden_sizes({5, 3})
                          .proj_size(3));
      },
      "^deeprnn::LSTM: proj_size=3 must be >= 0 and smaller than every "
      "layer's hidden size, got hidden_sizes\\[1\\]=3$"));
  for (const MergeMode merge :
       {MergeMode::kSum, MergeMode::kMul, MergeMode::kAve}) {
    std::ostringstream name;
    name << merge;
    EXPECT_TRUE(throws_matching(
        [merge] { deeprnn::GRU(deeprnn::GRUOptions(2, 3).merge_mode(merge)); },
        "^deeprnn::GRU: merge_mode=" + name.str() +
            " combines the two directions of a layer and needs "
            "bidirectional=true, got bidirectional=false$"));
  }
  EXPECT_TRUE(throws_matching(
      [] {
        deeprnn::RNN(deeprnn::RNNOptions(2, 3).bidirectional(true).merge_mode(
            static_cast<MergeMode>(7)));
      },
      "^deeprnn::RNN: merge_mode must be kConcat, kSum, kMul or kAve, got "
      "MergeMode\\(7\\)$"));
  // hidden_size is not read when hidden_sizes is set, so it may be anything.
  EXPECT_NO_THROW(deeprnn::GRU(
      deeprnn::GRUOptions(2, 0).num_layers(2).hidden_sizes({3, 2})));
}

TEST(LayersModule, StackedStateMethodsNameForwardLayers) {
  deeprnn::LSTM lstm(
      deeprnn::LSTMOptions(2, 3).num_layers(2).hidden_sizes({5, 3}).proj_sizes(
          {2, 0}));
  const Tensor x = torch::randn({4, 2, 2});
  EXPECT_TRUE(throws_matching(
      [&] { lstm->forward(x); },
      "^deeprnn::LSTM: forward returns one stacked state tensor, which needs "
      "equal sizes in every layer, got hidden sizes \\[5, 3\\] and proj "
      "sizes \\[2, 0\\]; call forward_layers\\(input, hx, lengths\\)"));
  const auto packed = pack(x, torch::tensor({4, 3}, torch::kLong), false);
  EXPECT_TRUE(throws_matching(
      [&] { lstm->forward_with_packed_input(packed); },
      "^deeprnn::LSTM: forward_with_packed_input returns one stacked state "
      "tensor, .*call forward_layers\\(padded, hx, lengths\\)"));
  deeprnn::GRU gru(
      deeprnn::GRUOptions(2, 3).num_layers(2).hidden_sizes({3, 4}));
  EXPECT_TRUE(throws_matching(
      [&] { gru->forward(x); },
      "^deeprnn::GRU: forward returns one stacked state tensor, which needs "
      "equal sizes in every layer, got hidden sizes \\[3, 4\\]; call "
      "forward_layers"));

  deeprnn::RNN last(deeprnn::RNNOptions(2, 3).return_sequences(false));
  EXPECT_TRUE(throws_matching(
      [&] { last->forward_with_packed_input(packed); },
      "^deeprnn::RNN: forward_with_packed_input returns a PackedSequence, "
      "which cannot hold the \\(batch, features\\) last-step output of "
      "return_sequences=false; pad the input with pad_packed_sequence and "
      "call forward\\(padded, hx, lengths\\)$"));
}

TEST(LayersModule, BadLayerStatesAreRefused) {
  deeprnn::GRU gru(deeprnn::GRUOptions(2, 3)
                       .num_layers(2)
                       .hidden_sizes({3, 4})
                       .bidirectional(true));
  const Tensor x = torch::randn({4, 5, 2});
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_layers(x, {torch::randn({2, 5, 3})});
      },
      "^deeprnn::GRU: hx must hold one tensor per layer \\(num_layers = 2\\), "
      "got 1 tensors; pass none at all for zeros$"));
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_layers(
            x, {torch::randn({2, 5, 3}), torch::randn({2, 5, 3})});
      },
      "^deeprnn::GRU: hx\\[1\\] must have shape \\[2, 5, 4\\] = "
      "\\(num_directions, batch, hidden size of layer 1\\) for batched 3-D "
      "input, got \\[2, 5, 3\\]$"));
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_layers(
            x.select(1, 0), {torch::randn({2, 3}), torch::randn({2, 1, 4})});
      },
      "^deeprnn::GRU: hx\\[1\\] must have shape \\[2, 4\\] = "
      "\\(num_directions, hidden size of layer 1\\) for unbatched 2-D input, "
      "got \\[2, 1, 4\\]$"));
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_layers(x, {torch::randn({2, 5, 3}), Tensor()});
      },
      "^deeprnn::GRU: hx\\[1\\] is undefined; pass none at all for zeros$"));

  deeprnn::LSTM lstm(
      deeprnn::LSTMOptions(2, 4).num_layers(2).hidden_sizes({4, 3}).proj_sizes(
          {2, 0}));
  const std::vector<Tensor> h0 = {
      torch::randn({1, 5, 2}), torch::randn({1, 5, 3})};
  EXPECT_TRUE(throws_matching(
      [&] {
        lstm->forward_layers(
            x,
            std::make_tuple(
                h0,
                std::vector<Tensor>{
                    torch::randn({1, 5, 2}), torch::randn({1, 5, 3})}));
      },
      "^deeprnn::LSTM: c_0\\[0\\] must have shape \\[1, 5, 4\\] = "
      "\\(num_directions, batch, hidden size of layer 0\\)"));
  EXPECT_TRUE(throws_matching(
      [&] {
        lstm->forward_layers(
            x,
            std::make_tuple(
                std::vector<Tensor>{
                    torch::randn({1, 5, 4}), torch::randn({1, 5, 3})},
                h0));
      },
      "^deeprnn::LSTM: h_0\\[0\\] must have shape \\[1, 5, 2\\] = "
      "\\(num_directions, batch, proj size of layer 0\\)"));
  EXPECT_TRUE(throws_matching(
      [&] {
        lstm->forward_layers(x, std::make_tuple(h0, std::vector<Tensor>{}));
      },
      "^deeprnn::LSTM: c_0 must hold one tensor per layer \\(num_layers = "
      "2\\), got 0 tensors"));
  // Two empty lists are no state, as an empty hx is for GRU and RNN.
  EXPECT_NO_THROW(lstm->forward_layers(
      x, std::make_tuple(std::vector<Tensor>{}, std::vector<Tensor>{})));

  // forward's stacked state on the per-layer path (uniform, merged).
  deeprnn::RNN rnn(
      deeprnn::RNNOptions(2, 3).num_layers(2).bidirectional(true).merge_mode(
          MergeMode::kSum));
  EXPECT_TRUE(throws_matching(
      [&] {
        rnn->forward(x, torch::randn({2, 5, 3}));
      },
      "^deeprnn::RNN: hx must have shape \\[4, 5, 3\\] = "
      "\\(num_layers\\*num_directions, batch, hidden_size\\), got "
      "\\[2, 5, 3\\]$"));
}

// ---------------------------------------------------------------------------
// Printing, clone and the type-erased containers.

template <typename Holder>
std::string printed(const Holder& holder) {
  std::ostringstream stream;
  holder->pretty_print(stream);
  return stream.str();
}

TEST(LayersModule, PrettyPrintShowsTheNewOptionsWhenSet) {
  EXPECT_EQ(
      printed(deeprnn::LSTM(deeprnn::LSTMOptions(10, 3)
                                .num_layers(2)
                                .hidden_sizes({3, 2})
                                .proj_sizes({2, 0})
                                .bidirectional(true)
                                .merge_mode(MergeMode::kAve)
                                .return_sequences(false))),
      "deeprnn::LSTM(input_size=10, hidden_sizes=[3, 2], num_layers=2, "
      "bias=true, batch_first=false, dropout=0, bidirectional=true, "
      "proj_sizes=[2, 0], merge_mode=kAve, return_sequences=false)");
  EXPECT_EQ(
      printed(
          deeprnn::GRU(deeprnn::GRUOptions(3, 4).bidirectional(true).merge_mode(
              MergeMode::kMul))),
      "deeprnn::GRU(input_size=3, hidden_size=4, num_layers=1, bias=true, "
      "batch_first=false, dropout=0, bidirectional=true, merge_mode=kMul)");
  EXPECT_EQ(
      printed(deeprnn::RNN(deeprnn::RNNOptions(3, 4).return_sequences(false))),
      "deeprnn::RNN(input_size=3, hidden_size=4, num_layers=1, "
      "nonlinearity=kTanh, bias=true, batch_first=false, dropout=0, "
      "bidirectional=false, return_sequences=false)");
  std::ostringstream names;
  names << MergeMode::kConcat << MergeMode::kSum;
  EXPECT_EQ(names.str(), "kConcatkSum");
}

TEST(LayersModule, CloneKeepsTheLayout) {
  torch::manual_seed(23);
  deeprnn::LSTM lstm(deeprnn::LSTMOptions(2, 4)
                         .num_layers(2)
                         .hidden_sizes({4, 3})
                         .proj_sizes({2, 0})
                         .bidirectional(true)
                         .merge_mode(MergeMode::kSum)
                         .return_sequences(false));
  auto copy = std::dynamic_pointer_cast<deeprnn::LSTMImpl>(lstm->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_EQ(copy->flat_weights_names(), lstm->flat_weights_names());
  const Tensor x = torch::randn({5, 3, 2});
  const Tensor lengths = torch::tensor({2, 5, 3}, torch::kLong);
  auto [a, a_state] = lstm->forward_layers(x, std::nullopt, lengths);
  auto [b, b_state] = copy->forward_layers(x, std::nullopt, lengths);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({3, 3}));
  // A deep copy: changing it leaves the original alone.
  {
    torch::NoGradGuard no_grad;
    copy->named_parameters()["weight_hr_l0"].add_(1.0);
  }
  EXPECT_TRUE(torch::equal(
      std::get<0>(lstm->forward_layers(x, std::nullopt, lengths)), a));
  EXPECT_FALSE(torch::equal(
      std::get<0>(copy->forward_layers(x, std::nullopt, lengths)), a));
}

TEST(LayersModule, AnyModuleAndSequentialStillWork) {
  torch::manual_seed(24);
  const Tensor x = torch::randn({5, 3, 2});
  const Tensor lengths = torch::tensor({2, 5, 4}, torch::kLong);
  using SingleResult = std::tuple<Tensor, Tensor>;

  deeprnn::GRU gru(deeprnn::GRUOptions(2, 4)
                       .num_layers(2)
                       .bidirectional(true)
                       .merge_mode(MergeMode::kAve)
                       .return_sequences(false));
  torch::nn::AnyModule any_gru(gru);
  const auto [direct, direct_hy] = gru->forward(x, Tensor(), lengths);
  const auto [any_out, any_hy] =
      any_gru.forward<SingleResult>(x, Tensor(), lengths);
  EXPECT_EQ(any_out.sizes(), torch::IntArrayRef({3, 4}));
  EXPECT_TRUE(torch::equal(any_out, direct));
  EXPECT_TRUE(torch::equal(any_hy, direct_hy));
  EXPECT_TRUE(torch::equal(
      std::get<0>(any_gru.forward<SingleResult>(x)),
      std::get<0>(gru->forward(x))));

  deeprnn::LSTM lstm(
      deeprnn::LSTMOptions(2, 3).num_layers(2).bidirectional(true).merge_mode(
          MergeMode::kSum));
  torch::nn::Sequential sequential(lstm);
  using LSTMResult = std::tuple<Tensor, std::tuple<Tensor, Tensor>>;
  const auto [seq_out, seq_state] =
      sequential->forward<LSTMResult>(x, LSTMState(), lengths);
  const auto [lstm_out, lstm_state] = lstm->forward(x, std::nullopt, lengths);
  EXPECT_EQ(seq_out.sizes(), torch::IntArrayRef({5, 3, 3}));
  EXPECT_TRUE(torch::equal(seq_out, lstm_out));
  EXPECT_TRUE(torch::equal(std::get<1>(seq_state), std::get<1>(lstm_state)));
}

} // namespace
