// Variable-length batches in the C++ modules: deeprnn::RNN / GRU / LSTM
// against torch::nn's forward_with_packed_input with the same parameters
// (copied by name), in float64, through both of deeprnn's forms:
// forward_with_packed_input and forward(input, hx, lengths). Then the
// full-length case against no lengths, the errors, and the type-erased
// containers that rely on FORWARD_HAS_DEFAULT_ARGS.

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
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using deeprnn_test::fresh_leaf;
using deeprnn_test::tensors_close;
using deeprnn_test::throws_matching;
using torch::Tensor;
using torch::nn::utils::rnn::PackedSequence;
namespace rnn_utils = torch::nn::utils::rnn;

// ---------------------------------------------------------------------------
// The packed form has torch::nn's signatures exactly, so code written against
// torch::nn::LSTM::forward_with_packed_input compiles against deeprnn's.

template <typename Impl, typename State>
using PackedResult = decltype(std::declval<Impl&>().forward_with_packed_input(
    std::declval<const PackedSequence&>(),
    std::declval<State>()));

using LSTMState = std::optional<std::tuple<Tensor, Tensor>>;
static_assert(std::is_same_v<
              PackedResult<deeprnn::LSTMImpl, LSTMState>,
              PackedResult<torch::nn::LSTMImpl, LSTMState>>);
static_assert(std::is_same_v<
              PackedResult<deeprnn::GRUImpl, Tensor>,
              PackedResult<torch::nn::GRUImpl, Tensor>>);
static_assert(std::is_same_v<
              PackedResult<deeprnn::RNNImpl, Tensor>,
              PackedResult<torch::nn::RNNImpl, Tensor>>);

// ---------------------------------------------------------------------------
// Both libraries behind one call shape.

enum class Mode { kLSTM, kGRU, kRNNTanh, kRNNReLU };

struct Case {
  Mode mode;
  int64_t num_layers;
  bool bidirectional;
  bool batch_first;
  int64_t proj_size; // LSTM only
  bool with_state;
  bool enforce_sorted = false;
};

std::string describe(const Case& c) {
  static const char* const names[] = {"LSTM", "GRU", "RNN(tanh)", "RNN(relu)"};
  std::ostringstream stream;
  stream << names[static_cast<int>(c.mode)] << " layers=" << c.num_layers
         << " bidirectional=" << c.bidirectional
         << " batch_first=" << c.batch_first << " proj_size=" << c.proj_size
         << " with_state=" << c.with_state
         << " enforce_sorted=" << c.enforce_sorted;
  return stream.str();
}

// (output, hy, cy); cy is undefined outside LSTM, as are h0/c0 when no state
// is given.
using PackedOut = std::tuple<PackedSequence, Tensor, Tensor>;
using PaddedOut = std::tuple<Tensor, Tensor, Tensor>;

struct Runner {
  std::shared_ptr<torch::nn::Module> module;
  std::function<PackedOut(const PackedSequence&, const Tensor&, const Tensor&)>
      packed;
  // deeprnn only: forward(input, hx, lengths).
  std::function<
      PaddedOut(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>
      padded;
};

template <typename Impl>
Runner lstm_runner(std::shared_ptr<Impl> impl) {
  Runner runner;
  runner.module = impl;
  runner.packed =
      [impl](const PackedSequence& x, const Tensor& h0, const Tensor& c0) {
        LSTMState state;
        if (h0.defined()) {
          state = std::make_tuple(h0, c0);
        }
        auto [output, final_state] = impl->forward_with_packed_input(x, state);
        return PackedOut(
            output, std::get<0>(final_state), std::get<1>(final_state));
      };
  return runner;
}

template <typename Impl>
Runner single_state_runner(std::shared_ptr<Impl> impl) {
  Runner runner;
  runner.module = impl;
  runner.packed =
      [impl](const PackedSequence& x, const Tensor& h0, const Tensor&) {
        auto [output, hy] = impl->forward_with_packed_input(x, h0);
        return PackedOut(output, hy, Tensor());
      };
  return runner;
}

template <typename Options>
Options common_options(const Case& c, Options options) {
  return options.num_layers(c.num_layers)
      .batch_first(c.batch_first)
      .bidirectional(c.bidirectional);
}

Runner make_torch_runner(const Case& c, int64_t input_size, int64_t hidden) {
  switch (c.mode) {
    case Mode::kLSTM:
      return lstm_runner(std::make_shared<torch::nn::LSTMImpl>(
          common_options(c, torch::nn::LSTMOptions(input_size, hidden))
              .proj_size(c.proj_size)));
    case Mode::kGRU:
      return single_state_runner(std::make_shared<torch::nn::GRUImpl>(
          common_options(c, torch::nn::GRUOptions(input_size, hidden))));
    case Mode::kRNNTanh:
    case Mode::kRNNReLU:
      break;
  }
  auto options = common_options(c, torch::nn::RNNOptions(input_size, hidden));
  if (c.mode == Mode::kRNNReLU) {
    options.nonlinearity(torch::kReLU);
  }
  return single_state_runner(std::make_shared<torch::nn::RNNImpl>(options));
}

Runner make_deeprnn_runner(const Case& c, int64_t input_size, int64_t hidden) {
  if (c.mode == Mode::kLSTM) {
    auto impl = std::make_shared<deeprnn::LSTMImpl>(
        common_options(c, deeprnn::LSTMOptions(input_size, hidden))
            .proj_size(c.proj_size));
    Runner runner = lstm_runner(impl);
    runner.padded = [impl](
                        const Tensor& x,
                        const Tensor& h0,
                        const Tensor& c0,
                        const Tensor& lengths) {
      LSTMState state;
      if (h0.defined()) {
        state = std::make_tuple(h0, c0);
      }
      auto [output, final_state] = impl->forward(x, state, lengths);
      return PaddedOut(
          output, std::get<0>(final_state), std::get<1>(final_state));
    };
    return runner;
  }
  const auto single_state = [](auto impl) {
    Runner runner = single_state_runner(impl);
    runner.padded = [impl](
                        const Tensor& x,
                        const Tensor& h0,
                        const Tensor&,
                        const Tensor& lengths) {
      auto [output, hy] = impl->forward(x, h0, lengths);
      return PaddedOut(output, hy, Tensor());
    };
    return runner;
  };
  if (c.mode == Mode::kGRU) {
    return single_state(std::make_shared<deeprnn::GRUImpl>(
        common_options(c, deeprnn::GRUOptions(input_size, hidden))));
  }
  auto options = common_options(c, deeprnn::RNNOptions(input_size, hidden));
  if (c.mode == Mode::kRNNReLU) {
    options.nonlinearity(torch::kReLU);
  }
  return single_state(std::make_shared<deeprnn::RNNImpl>(options));
}

void copy_parameters_by_name(
    const torch::nn::Module& from,
    torch::nn::Module& to) {
  const auto source = from.named_parameters();
  auto target = to.named_parameters();
  ASSERT_EQ(source.keys(), target.keys());
  torch::NoGradGuard no_grad;
  for (const auto& item : source) {
    target[item.key()].copy_(item.value());
  }
}

::testing::AssertionResult same_integers(
    const Tensor& actual,
    const Tensor& expected) {
  if (actual.defined() != expected.defined()) {
    return ::testing::AssertionFailure()
        << "defined: " << actual.defined() << " vs " << expected.defined();
  }
  if (actual.defined() && !torch::equal(actual, expected)) {
    return ::testing::AssertionFailure() << actual << " vs " << expected;
  }
  return ::testing::AssertionSuccess();
}

constexpr int64_t kSteps = 5, kBatch = 4, kInputSize = 3, kHidden = 5;

// Unsorted, with a full-length sequence and one of a single step. The
// sorted variant is what enforce_sorted=true demands.
Tensor test_lengths(bool sorted) {
  return sorted ? torch::tensor({5, 4, 3, 1}, torch::kLong)
                : torch::tensor({3, 5, 1, 4}, torch::kLong);
}

// The three computations: torch::nn on a PackedSequence (the reference),
// deeprnn on the same PackedSequence, deeprnn on the padded input with
// lengths; then the same random cotangents through all three.
void check_against_torch(const Case& c) {
  SCOPED_TRACE(describe(c));
  const bool is_lstm = c.mode == Mode::kLSTM;
  const int64_t num_directions = c.bidirectional ? 2 : 1;
  const int64_t real_hidden = c.proj_size > 0 ? c.proj_size : kHidden;
  const int64_t state_rows = c.num_layers * num_directions;
  const auto float64 = torch::TensorOptions().dtype(torch::kDouble);

  Runner reference = make_torch_runner(c, kInputSize, kHidden);
  Runner ours = make_deeprnn_runner(c, kInputSize, kHidden);
  reference.module->to(torch::kDouble);
  ours.module->to(torch::kDouble);
  copy_parameters_by_name(*reference.module, *ours.module);

  const Tensor lengths = test_lengths(c.enforce_sorted);
  const Tensor x = c.batch_first
      ? torch::randn({kBatch, kSteps, kInputSize}, float64)
      : torch::randn({kSteps, kBatch, kInputSize}, float64);
  const Tensor h0 = c.with_state
      ? torch::randn({state_rows, kBatch, real_hidden}, float64)
      : Tensor();
  const Tensor c0 = c.with_state && is_lstm
      ? torch::randn({state_rows, kBatch, kHidden}, float64)
      : Tensor();

  const auto pack = [&](const Tensor& padded) {
    return rnn_utils::pack_padded_sequence(
        padded, lengths, c.batch_first, c.enforce_sorted);
  };
  struct Leaves {
    Tensor x, h0, c0;
  };
  const auto leaves = [&] {
    return Leaves{fresh_leaf(x), fresh_leaf(h0), fresh_leaf(c0)};
  };
  const Leaves ref_in = leaves(), packed_in = leaves(), padded_in = leaves();

  auto [ref_output, ref_hy, ref_cy] =
      reference.packed(pack(ref_in.x), ref_in.h0, ref_in.c0);
  auto [packed_output, packed_hy, packed_cy] =
      ours.packed(pack(packed_in.x), packed_in.h0, packed_in.c0);
  auto [padded_output, padded_hy, padded_cy] =
      ours.padded(padded_in.x, padded_in.h0, padded_in.c0, lengths);

  // The packed result pairs with the input exactly as torch::nn's does.
  ASSERT_TRUE(tensors_close(packed_output.data(), ref_output.data()))
      << "packed output data";
  EXPECT_TRUE(
      same_integers(packed_output.batch_sizes(), ref_output.batch_sizes()))
      << "batch_sizes";
  EXPECT_TRUE(same_integers(
      packed_output.sorted_indices(), ref_output.sorted_indices()))
      << "sorted_indices";
  EXPECT_TRUE(same_integers(
      packed_output.unsorted_indices(), ref_output.unsorted_indices()))
      << "unsorted_indices";
  EXPECT_TRUE(tensors_close(packed_hy, ref_hy)) << "packed h_n";
  if (is_lstm) {
    EXPECT_TRUE(tensors_close(packed_cy, ref_cy)) << "packed c_n";
  }

  // The padded form: the same numbers where a sequence runs, exact zeros
  // past its end.
  ASSERT_TRUE(tensors_close(pack(padded_output).data(), ref_output.data()))
      << "padded output, packed";
  const Tensor padded_again = std::get<0>(rnn_utils::pad_packed_sequence(
      pack(padded_output), c.batch_first, 0.0, kSteps));
  EXPECT_TRUE(torch::equal(padded_output, padded_again))
      << "padded output past the lengths must be zero";
  EXPECT_TRUE(tensors_close(padded_hy, ref_hy)) << "padded h_n";
  if (is_lstm) {
    EXPECT_TRUE(tensors_close(padded_cy, ref_cy)) << "padded c_n";
  }

  const Tensor grad_output = torch::randn_like(ref_output.data());
  const Tensor grad_hy = torch::randn_like(ref_hy);
  const Tensor grad_cy = is_lstm ? torch::randn_like(ref_cy) : Tensor();
  const auto loss = [&](const Tensor& data, const Tensor& h, const Tensor& cs) {
    Tensor total = (data * grad_output).sum() + (h * grad_hy).sum();
    return is_lstm ? total + (cs * grad_cy).sum() : total;
  };
  const auto parameter_grads = [](const torch::nn::Module& module) {
    std::vector<std::pair<std::string, Tensor>> grads;
    for (auto& item : module.named_parameters()) {
      grads.emplace_back(item.key(), item.value().grad().clone());
      item.value().mutable_grad().reset();
    }
    return grads;
  };
  loss(ref_output.data(), ref_hy, ref_cy).backward();
  const auto ref_grads = parameter_grads(*reference.module);
  loss(packed_output.data(), packed_hy, packed_cy).backward();
  const auto packed_grads = parameter_grads(*ours.module);
  loss(pack(padded_output).data(), padded_hy, padded_cy).backward();
  const auto padded_grads = parameter_grads(*ours.module);

  const auto check_grads =
      [&](const Leaves& in,
          const std::vector<std::pair<std::string, Tensor>>& grads,
          const char* form) {
        SCOPED_TRACE(form);
        EXPECT_TRUE(tensors_close(in.x.grad(), ref_in.x.grad()))
            << "grad input";
        if (c.with_state) {
          EXPECT_TRUE(tensors_close(in.h0.grad(), ref_in.h0.grad()))
              << "grad h_0";
          if (is_lstm) {
            EXPECT_TRUE(tensors_close(in.c0.grad(), ref_in.c0.grad()))
                << "grad c_0";
          }
        }
        ASSERT_EQ(grads.size(), ref_grads.size());
        for (size_t i = 0; i < grads.size(); ++i) {
          EXPECT_EQ(grads[i].first, ref_grads[i].first);
          EXPECT_TRUE(tensors_close(grads[i].second, ref_grads[i].second))
              << "grad of " << grads[i].first;
        }
      };
  check_grads(packed_in, packed_grads, "forward_with_packed_input");
  check_grads(padded_in, padded_grads, "forward(input, hx, lengths)");

  // Padded input positions take no part: their gradient is exactly zero.
  const Tensor is_padding =
      std::get<0>(rnn_utils::pad_packed_sequence(
          pack(torch::ones_like(x)), c.batch_first, 0.0, kSteps)) == 0;
  const Tensor padding_grad = padded_in.x.grad().masked_select(is_padding);
  EXPECT_GT(padding_grad.numel(), 0);
  EXPECT_TRUE(torch::equal(padding_grad, torch::zeros_like(padding_grad)))
      << "gradient of padded input positions";
}

class LengthsModule : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(20240917);
  }
};

// with_state alternates with the other flags so that both the zero default
// and a user's state (permuted into and out of the packed order) are seen
// with each layer count and direction.
TEST_F(LengthsModule, LSTMMatchesTorchPacked) {
  for (int64_t layers : {1, 2}) {
    for (bool bidirectional : {false, true}) {
      for (bool batch_first : {false, true}) {
        const bool with_state = (layers + bidirectional + batch_first) % 2;
        check_against_torch(
            {Mode::kLSTM, layers, bidirectional, batch_first, 0, with_state});
      }
    }
  }
}

TEST_F(LengthsModule, LSTMWithProjectionMatchesTorchPacked) {
  for (int64_t layers : {1, 2}) {
    for (bool bidirectional : {false, true}) {
      for (bool batch_first : {false, true}) {
        const bool with_state = (layers + bidirectional + batch_first) % 2;
        check_against_torch(
            {Mode::kLSTM, layers, bidirectional, batch_first, 3, with_state});
      }
    }
  }
}

TEST_F(LengthsModule, GRUMatchesTorchPacked) {
  for (int64_t layers : {1, 2}) {
    for (bool bidirectional : {false, true}) {
      for (bool batch_first : {false, true}) {
        const bool with_state = (layers + bidirectional + batch_first) % 2;
        check_against_torch(
            {Mode::kGRU, layers, bidirectional, batch_first, 0, with_state});
      }
    }
  }
}

TEST_F(LengthsModule, RNNTanhAndReLUMatchTorchPacked) {
  for (Mode mode : {Mode::kRNNTanh, Mode::kRNNReLU}) {
    for (int64_t layers : {1, 2}) {
      for (bool bidirectional : {false, true}) {
        for (bool batch_first : {false, true}) {
          const bool with_state = (layers + bidirectional + batch_first) % 2;
          check_against_torch(
              {mode, layers, bidirectional, batch_first, 0, with_state});
        }
      }
    }
  }
}

TEST_F(LengthsModule, SortedPackingHasNoIndices) {
  // enforce_sorted=true leaves sorted_indices and unsorted_indices
  // undefined; the states then pass through unpermuted.
  for (Mode mode : {Mode::kLSTM, Mode::kGRU, Mode::kRNNTanh}) {
    Case c{mode, 2, true, false, mode == Mode::kLSTM ? 3 : 0, true};
    c.enforce_sorted = true;
    check_against_torch(c);
  }
}

// ---------------------------------------------------------------------------
// lengths all equal to the number of steps is no lengths at all, to the bit.

template <typename Module, typename Call>
void check_full_lengths_equal_none(Module module, Call call, bool batch_first) {
  module->to(torch::kDouble);
  const Tensor x = batch_first
      ? torch::randn({kBatch, kSteps, kInputSize}, torch::kDouble)
      : torch::randn({kSteps, kBatch, kInputSize}, torch::kDouble);
  const Tensor full = torch::full({kBatch}, kSteps, torch::kLong);
  const Tensor x_none = fresh_leaf(x), x_full = fresh_leaf(x);
  const std::vector<Tensor> none = call(module, x_none, Tensor());
  const std::vector<Tensor> with_full = call(module, x_full, full);
  ASSERT_EQ(none.size(), with_full.size());
  Tensor loss_none = torch::zeros({}, torch::kDouble);
  Tensor loss_full = torch::zeros({}, torch::kDouble);
  for (size_t i = 0; i < none.size(); ++i) {
    EXPECT_TRUE(torch::equal(none[i], with_full[i])) << "result " << i;
    const Tensor weight = torch::randn_like(none[i]);
    loss_none = loss_none + (none[i] * weight).sum();
    loss_full = loss_full + (with_full[i] * weight).sum();
  }
  const auto grads_of = [&](const Tensor& loss, const Tensor& input) {
    std::vector<Tensor> wrt = module->parameters();
    wrt.push_back(input);
    return torch::autograd::grad({loss}, wrt);
  };
  const std::vector<Tensor> grads_none = grads_of(loss_none, x_none);
  const std::vector<Tensor> grads_full = grads_of(loss_full, x_full);
  for (size_t i = 0; i < grads_none.size(); ++i) {
    EXPECT_TRUE(torch::equal(grads_none[i], grads_full[i])) << "gradient " << i;
  }
}

TEST_F(LengthsModule, FullLengthsEqualNoLengthsExactly) {
  const auto lstm_call = [](auto& module, const Tensor& x, const Tensor& len) {
    auto [output, state] = module->forward(x, std::nullopt, len);
    return std::vector<Tensor>{output, std::get<0>(state), std::get<1>(state)};
  };
  const auto single_call =
      [](auto& module, const Tensor& x, const Tensor& len) {
        auto [output, hy] = module->forward(x, Tensor(), len);
        return std::vector<Tensor>{output, hy};
      };
  for (bool bidirectional : {false, true}) {
    for (bool batch_first : {false, true}) {
      SCOPED_TRACE(
          "bidirectional=" + std::to_string(bidirectional) +
          " batch_first=" + std::to_string(batch_first));
      check_full_lengths_equal_none(
          deeprnn::LSTM(deeprnn::LSTMOptions(kInputSize, kHidden)
                            .num_layers(2)
                            .proj_size(bidirectional ? 3 : 0)
                            .bidirectional(bidirectional)
                            .batch_first(batch_first)),
          lstm_call,
          batch_first);
      check_full_lengths_equal_none(
          deeprnn::GRU(deeprnn::GRUOptions(kInputSize, kHidden)
                           .num_layers(2)
                           .bidirectional(bidirectional)
                           .batch_first(batch_first)),
          single_call,
          batch_first);
      auto rnn_options = deeprnn::RNNOptions(kInputSize, kHidden)
                             .num_layers(2)
                             .bidirectional(bidirectional)
                             .batch_first(batch_first);
      if (bidirectional) {
        rnn_options.nonlinearity(torch::kReLU);
      }
      check_full_lengths_equal_none(
          deeprnn::RNN(rnn_options), single_call, batch_first);
    }
  }
}

// ---------------------------------------------------------------------------
// Errors.

TEST(LengthsModuleErrors, UnbatchedInputWithLengthsNamesModuleAndArgument) {
  const Tensor one = torch::tensor({3}, torch::kLong);
  const Tensor x = torch::randn({3, 2});
  deeprnn::LSTM lstm(2, 4);
  deeprnn::GRU gru(2, 4);
  deeprnn::RNN rnn(2, 4);
  EXPECT_TRUE(throws_matching(
      [&] { lstm->forward(x, std::nullopt, one); },
      "^deeprnn::LSTM: lengths needs batched 3-D input, got unbatched 2-D"));
  EXPECT_TRUE(throws_matching(
      [&] { gru->forward(x, Tensor(), one); },
      "^deeprnn::GRU: lengths needs batched 3-D input"));
  EXPECT_TRUE(throws_matching(
      [&] { rnn->forward(x, Tensor(), one); },
      "^deeprnn::RNN: lengths needs batched 3-D input"));
}

TEST(LengthsModuleErrors, BadLengthsNameTheOperatorAndArgument) {
  const Tensor x = torch::randn({5, 3, 2}); // T = 5, B = 3
  deeprnn::LSTM lstm(2, 4);
  deeprnn::GRU gru(2, 4);
  deeprnn::RNN rnn_tanh(2, 4);
  deeprnn::RNN rnn_relu(deeprnn::RNNOptions(2, 4).nonlinearity(torch::kReLU));
  const auto lstm_with = [&](const Tensor& lengths) {
    return [&, lengths] { lstm->forward(x, std::nullopt, lengths); };
  };
  // Each length must lie in 1..T.
  EXPECT_TRUE(throws_matching(
      lstm_with(torch::tensor({5, 0, 2}, torch::kLong)),
      "^deeprnn\\.lstm: lengths must be in 1\\.\\.seq_len = 1\\.\\.5, got "
      "lengths\\[1\\] = 0"));
  EXPECT_TRUE(throws_matching(
      lstm_with(torch::tensor({5, 6, 2}, torch::kLong)),
      "^deeprnn\\.lstm: lengths must be in 1\\.\\.seq_len = 1\\.\\.5, got "
      "lengths\\[1\\] = 6"));
  // One per sequence.
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward(x, Tensor(), torch::tensor({5, 4}, torch::kLong));
      },
      "^deeprnn\\.gru: lengths must have shape \\(3,\\) = \\(batch,\\), got \\(2,\\)"));
  // Integers, not floats.
  EXPECT_TRUE(throws_matching(
      [&] {
        rnn_tanh->forward(x, Tensor(), torch::tensor({5.0, 4.0, 1.0}));
      },
      "^deeprnn\\.rnn_tanh: lengths must be an int64 tensor"));
  EXPECT_TRUE(throws_matching(
      [&] {
        rnn_relu->forward(x, Tensor(), torch::tensor({-1, 4, 1}, torch::kLong));
      },
      "^deeprnn\\.rnn_relu: lengths must be in 1\\.\\.seq_len"));
}

TEST(LengthsModuleErrors, PackedInputStatesAreChecked) {
  const PackedSequence packed = rnn_utils::pack_padded_sequence(
      torch::randn({5, 3, 2}),
      torch::tensor({2, 5, 4}, torch::kLong),
      /*batch_first=*/false,
      /*enforce_sorted=*/false);
  deeprnn::GRU gru(2, 4);
  deeprnn::LSTM lstm(2, 4);
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_with_packed_input(packed, torch::randn({3, 4}));
      },
      "^deeprnn::GRU: with packed input, hx must be 3-D"));
  EXPECT_TRUE(throws_matching(
      [&] {
        lstm->forward_with_packed_input(
            packed, std::make_tuple(torch::randn({1, 3, 4}), Tensor()));
      },
      "^deeprnn::LSTM: the initial state \\(h_0, c_0\\) must hold two"));
  // A state for the wrong number of sequences, before it is permuted.
  EXPECT_TRUE(throws_matching(
      [&] {
        lstm->forward_with_packed_input(
            packed,
            std::make_tuple(torch::randn({1, 3, 4}), torch::randn({1, 2, 4})));
      },
      "^deeprnn::LSTM: with packed input, c_0 must have batch size 3 \\(the "
      "number of packed sequences\\) in dim 1, got shape \\[1, 2, 4\\]"));
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_with_packed_input(packed, torch::randn({1, 4, 4}));
      },
      "^deeprnn::GRU: with packed input, hx must have batch size 3"));
  // The rest of a state's shape is the operator's to check.
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_with_packed_input(packed, torch::randn({2, 3, 4}));
      },
      "^deeprnn\\.gru: hx must have shape"));
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_with_packed_input(
            PackedSequence(torch::randn({10}), torch::tensor({3, 3, 2, 2})));
      },
      "^deeprnn::GRU: packed_input\\.data must be 2-D"));
  // Hand-built packings that pack_padded_sequence would never make.
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_with_packed_input(
            PackedSequence(torch::randn({9, 2}), torch::tensor({3, 3, 2, 2})));
      },
      "^deeprnn::GRU: packed_input\\.data must have sum\\(batch_sizes\\) = 10 "
      "rows, got 9"));
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward_with_packed_input(
            PackedSequence(torch::randn({7, 2}), torch::tensor({2, 3, 2})));
      },
      "^deeprnn::GRU: packed_input\\.batch_sizes must be positive and "
      "non-increasing, got batch_sizes\\[1\\] = 3 after 2"));
}

// ---------------------------------------------------------------------------
// Type-erased containers: FORWARD_HAS_DEFAULT_ARGS fills in hx and lengths.

TEST(LengthsModuleUse, AnyModuleAndSequentialStillWork) {
  torch::manual_seed(3);
  const Tensor x = torch::randn({5, 3, 2});
  const Tensor lengths = torch::tensor({2, 5, 4}, torch::kLong);

  deeprnn::GRU gru(2, 4);
  torch::nn::AnyModule any_gru(gru);
  using SingleResult = std::tuple<Tensor, Tensor>;
  const auto [direct, direct_hy] = gru->forward(x, Tensor(), lengths);
  const auto [any_out, any_hy] =
      any_gru.forward<SingleResult>(x, Tensor(), lengths);
  EXPECT_TRUE(torch::equal(any_out, direct));
  EXPECT_TRUE(torch::equal(any_hy, direct_hy));
  // One and two arguments: the defaults mean zeros and no lengths.
  const auto [plain, plain_hy] = gru->forward(x);
  EXPECT_TRUE(
      torch::equal(std::get<0>(any_gru.forward<SingleResult>(x)), plain));
  EXPECT_TRUE(torch::equal(
      std::get<1>(any_gru.forward<SingleResult>(x, Tensor())), plain_hy));
  EXPECT_FALSE(torch::equal(direct_hy, plain_hy))
      << "lengths must change the final state of the shorter sequences";

  deeprnn::LSTM lstm(2, 4);
  torch::nn::AnyModule any_lstm(lstm);
  using LSTMResult = std::tuple<Tensor, std::tuple<Tensor, Tensor>>;
  const auto [lstm_direct, lstm_state] =
      lstm->forward(x, std::nullopt, lengths);
  const auto [lstm_any, lstm_any_state] =
      any_lstm.forward<LSTMResult>(x, LSTMState(), lengths);
  EXPECT_TRUE(torch::equal(lstm_any, lstm_direct));
  EXPECT_TRUE(
      torch::equal(std::get<1>(lstm_any_state), std::get<1>(lstm_state)));
  EXPECT_TRUE(torch::equal(
      std::get<0>(any_lstm.forward<LSTMResult>(x)),
      std::get<0>(lstm->forward(x))));

  deeprnn::RNN rnn(2, 4);
  torch::nn::Sequential sequential(rnn);
  EXPECT_TRUE(torch::equal(
      std::get<0>(sequential->forward<SingleResult>(x)),
      std::get<0>(rnn->forward(x))));
  const auto [seq_out, seq_hy] =
      sequential->forward<SingleResult>(x, Tensor(), lengths);
  const auto [rnn_out, rnn_hy] = rnn->forward(x, Tensor(), lengths);
  EXPECT_TRUE(torch::equal(seq_out, rnn_out));
  EXPECT_TRUE(torch::equal(seq_hy, rnn_hy));
}

} // namespace
