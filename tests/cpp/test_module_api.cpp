// The module API apart from numerics: options, printing, parameter layout,
// errors, cloning, dtype moves, checkpoints shared with torch::nn, and use
// inside a user's own module.

#include <deeprnn/deeprnn.h>

#include "test_helpers.h"

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using deeprnn_test::tensors_close;
using deeprnn_test::throws_matching;
using torch::Tensor;

// ---------------------------------------------------------------------------
// Options.

static_assert(
    std::is_same_v<
        deeprnn::RNNOptions::nonlinearity_t,
        torch::nn::RNNOptions::nonlinearity_t>,
    "a torch::nn nonlinearity must pass to deeprnn unchanged");

TEST(Options, DefaultsAreTorchNNs) {
  const deeprnn::LSTMOptions lstm(10, 20);
  const torch::nn::LSTMOptions torch_lstm(10, 20);
  EXPECT_EQ(lstm.input_size(), 10);
  EXPECT_EQ(lstm.hidden_size(), 20);
  EXPECT_EQ(lstm.num_layers(), torch_lstm.num_layers());
  EXPECT_EQ(lstm.bias(), torch_lstm.bias());
  EXPECT_EQ(lstm.batch_first(), torch_lstm.batch_first());
  EXPECT_EQ(lstm.dropout(), torch_lstm.dropout());
  EXPECT_EQ(lstm.bidirectional(), torch_lstm.bidirectional());
  EXPECT_EQ(lstm.proj_size(), torch_lstm.proj_size());

  const deeprnn::GRUOptions gru(3, 4);
  EXPECT_EQ(gru.num_layers(), 1);
  EXPECT_TRUE(gru.bias());
  EXPECT_FALSE(gru.batch_first());
  EXPECT_EQ(gru.dropout(), 0.0);
  EXPECT_FALSE(gru.bidirectional());

  const deeprnn::RNNOptions rnn(3, 4);
  EXPECT_TRUE(
      std::holds_alternative<torch::enumtype::kTanh>(rnn.nonlinearity()));
}

TEST(Options, SettersChain) {
  const auto options = deeprnn::LSTMOptions(2, 8)
                           .num_layers(3)
                           .bias(false)
                           .batch_first(true)
                           .dropout(0.25)
                           .bidirectional(true)
                           .proj_size(4);
  EXPECT_EQ(options.num_layers(), 3);
  EXPECT_FALSE(options.bias());
  EXPECT_TRUE(options.batch_first());
  EXPECT_EQ(options.dropout(), 0.25);
  EXPECT_TRUE(options.bidirectional());
  EXPECT_EQ(options.proj_size(), 4);

  const auto rnn = deeprnn::RNNOptions(2, 8).nonlinearity(torch::kReLU);
  EXPECT_TRUE(
      std::holds_alternative<torch::enumtype::kReLU>(rnn.nonlinearity()));
}

TEST(Options, ModuleKeepsItsOptions) {
  deeprnn::GRU gru(deeprnn::GRUOptions(5, 7).num_layers(2).batch_first(true));
  EXPECT_EQ(gru->options.input_size(), 5);
  EXPECT_EQ(gru->options.hidden_size(), 7);
  EXPECT_EQ(gru->options.num_layers(), 2);
  EXPECT_TRUE(gru->options.batch_first());
}

// ---------------------------------------------------------------------------
// Printing.

template <typename ModuleHolder>
std::string printed(const ModuleHolder& holder) {
  std::ostringstream stream;
  holder->pretty_print(stream);
  return stream.str();
}

TEST(PrettyPrint, ShowsEveryOption) {
  EXPECT_EQ(
      printed(deeprnn::LSTM(deeprnn::LSTMOptions(10, 20)
                                .num_layers(2)
                                .dropout(0.5)
                                .bidirectional(true)
                                .proj_size(5))),
      "deeprnn::LSTM(input_size=10, hidden_size=20, num_layers=2, bias=true, "
      "batch_first=false, dropout=0.5, bidirectional=true, proj_size=5)");
  EXPECT_EQ(
      printed(deeprnn::LSTM(3, 4)),
      "deeprnn::LSTM(input_size=3, hidden_size=4, num_layers=1, bias=true, "
      "batch_first=false, dropout=0, bidirectional=false, proj_size=0)");
  EXPECT_EQ(
      printed(deeprnn::GRU(deeprnn::GRUOptions(3, 4).batch_first(true))),
      "deeprnn::GRU(input_size=3, hidden_size=4, num_layers=1, bias=true, "
      "batch_first=true, dropout=0, bidirectional=false)");
  EXPECT_EQ(
      printed(deeprnn::RNN(
          deeprnn::RNNOptions(3, 4).nonlinearity(torch::kReLU).bias(false))),
      "deeprnn::RNN(input_size=3, hidden_size=4, num_layers=1, "
      "nonlinearity=kReLU, bias=false, batch_first=false, dropout=0, "
      "bidirectional=false)");
  EXPECT_EQ(
      printed(deeprnn::RNN(3, 4)),
      "deeprnn::RNN(input_size=3, hidden_size=4, num_layers=1, "
      "nonlinearity=kTanh, bias=true, batch_first=false, dropout=0, "
      "bidirectional=false)");
}

TEST(PrettyPrint, LeavesTheStreamFormatAlone) {
  std::ostringstream stream;
  deeprnn::GRU(2, 3)->pretty_print(stream);
  stream << " " << true;
  EXPECT_EQ(stream.str().substr(stream.str().size() - 2), " 1");
}

// ---------------------------------------------------------------------------
// Parameter layout: names, order and shapes exactly as torch::nn.

template <typename TorchModule, typename OurModule>
void expect_same_layout(const TorchModule& theirs, const OurModule& ours) {
  const auto expected = theirs->named_parameters();
  const auto actual = ours->named_parameters();
  ASSERT_EQ(actual.keys(), expected.keys());
  for (const auto& item : expected) {
    EXPECT_EQ(actual[item.key()].sizes(), item.value().sizes()) << item.key();
    EXPECT_TRUE(actual[item.key()].requires_grad()) << item.key();
  }
  EXPECT_EQ(ours->flat_weights_names(), expected.keys());
  const auto flat = ours->flat_weights();
  const auto all = ours->all_weights();
  const auto torch_all = theirs->all_weights();
  ASSERT_EQ(flat.size(), expected.size());
  ASSERT_EQ(all.size(), torch_all.size());
  for (size_t i = 0; i < flat.size(); ++i) {
    // The very tensors registered, not copies: the operator must see
    // (and differentiate) the module's parameters.
    EXPECT_TRUE(flat[i].is_same(actual[expected.keys()[i]]));
    EXPECT_TRUE(all[i].is_same(flat[i]));
    EXPECT_EQ(all[i].sizes(), torch_all[i].sizes());
  }
}

TEST(ParameterLayout, MatchesTorchNN) {
  for (int64_t layers : {1, 3}) {
    for (bool bidirectional : {false, true}) {
      for (bool bias : {false, true}) {
        SCOPED_TRACE(
            "layers=" + std::to_string(layers) + " bidirectional=" +
            std::to_string(bidirectional) + " bias=" + std::to_string(bias));
        for (int64_t proj : {0, 3}) {
          expect_same_layout(
              torch::nn::LSTM(torch::nn::LSTMOptions(5, 7)
                                  .num_layers(layers)
                                  .bidirectional(bidirectional)
                                  .bias(bias)
                                  .proj_size(proj)),
              deeprnn::LSTM(deeprnn::LSTMOptions(5, 7)
                                .num_layers(layers)
                                .bidirectional(bidirectional)
                                .bias(bias)
                                .proj_size(proj)));
        }
        expect_same_layout(
            torch::nn::GRU(torch::nn::GRUOptions(5, 7)
                               .num_layers(layers)
                               .bidirectional(bidirectional)
                               .bias(bias)),
            deeprnn::GRU(deeprnn::GRUOptions(5, 7)
                             .num_layers(layers)
                             .bidirectional(bidirectional)
                             .bias(bias)));
        expect_same_layout(
            torch::nn::RNN(torch::nn::RNNOptions(5, 7)
                               .num_layers(layers)
                               .bidirectional(bidirectional)
                               .bias(bias)),
            deeprnn::RNN(deeprnn::RNNOptions(5, 7)
                             .num_layers(layers)
                             .bidirectional(bidirectional)
                             .bias(bias)));
      }
    }
  }
}

TEST(ParameterLayout, InitialisedUniformlyWithinOneOverSqrtHidden) {
  torch::manual_seed(3);
  deeprnn::LSTM lstm(deeprnn::LSTMOptions(30, 25).num_layers(2));
  const double bound = 1.0 / 5.0;
  for (const auto& item : lstm->named_parameters()) {
    SCOPED_TRACE(item.key());
    const Tensor p = item.value();
    EXPECT_LE(p.abs().max().item<double>(), bound);
    // Spread over the interval, not a constant: max close to the bound.
    EXPECT_GT(p.abs().max().item<double>(), 0.9 * bound);
    EXPECT_GT(p.std().item<double>(), 0.5 * bound / std::sqrt(3.0));
  }
  // reset_parameters draws again.
  const Tensor before = lstm->named_parameters()["weight_hh_l1"].clone();
  lstm->reset_parameters();
  EXPECT_FALSE(torch::equal(before, lstm->named_parameters()["weight_hh_l1"]));
}

// ---------------------------------------------------------------------------
// Errors: clear c10::Error naming the module or operator and the argument,
// and the module keeps working afterwards.

TEST(ModuleErrors, BadOptionsNameTheModuleAndOption) {
  EXPECT_TRUE(throws_matching(
      [] { deeprnn::LSTM(deeprnn::LSTMOptions(4, 8).num_layers(0)); },
      "deeprnn::LSTM: num_layers must be >= 1, got 0"));
  EXPECT_TRUE(throws_matching(
      [] { deeprnn::GRU(deeprnn::GRUOptions(4, 8).dropout(1.5)); },
      "deeprnn::GRU: dropout must be in \\[0, 1\\], got 1.5"));
  EXPECT_TRUE(throws_matching(
      [] { deeprnn::GRU(deeprnn::GRUOptions(4, 8).dropout(-0.1)); },
      "deeprnn::GRU: dropout"));
  EXPECT_TRUE(throws_matching(
      [] { deeprnn::RNN(4, 0); },
      "deeprnn::RNN: hidden_size must be > 0, got 0"));
  EXPECT_TRUE(throws_matching(
      [] { deeprnn::LSTM(deeprnn::LSTMOptions(4, 8).proj_size(8)); },
      "deeprnn::LSTM: proj_size .*smaller than hidden_size \\(8\\), got 8"));
  EXPECT_TRUE(throws_matching(
      [] { deeprnn::LSTM(deeprnn::LSTMOptions(4, 8).proj_size(-1)); },
      "deeprnn::LSTM: proj_size"));
}

struct CapturedWarnings : c10::WarningHandler {
  void process(const c10::Warning& warning) override {
    messages.push_back(warning.msg());
  }
  std::vector<std::string> messages;
};

TEST(ModuleErrors, DropoutWithOneLayerWarns) {
  CapturedWarnings warnings;
  {
    c10::WarningUtils::WarningHandlerGuard guard(&warnings);
    deeprnn::GRU(deeprnn::GRUOptions(4, 8).dropout(0.3));
  }
  ASSERT_EQ(warnings.messages.size(), 1u);
  EXPECT_NE(warnings.messages[0].find("deeprnn::GRU"), std::string::npos);
  EXPECT_NE(warnings.messages[0].find("num_layers=1"), std::string::npos);
}

TEST(ModuleErrors, BadInputIsReportedAndTheModuleStillWorks) {
  torch::manual_seed(11);
  deeprnn::LSTM lstm(deeprnn::LSTMOptions(10, 32).num_layers(2));
  const Tensor x = torch::randn({5, 8, 10});
  const Tensor h0 = torch::randn({2, 8, 32});
  const Tensor c0 = torch::randn({2, 8, 32});
  const auto [expected, expected_state] = lstm->forward(x, std::tuple(h0, c0));

  EXPECT_TRUE(throws_matching(
      [&] {
        lstm->forward(torch::randn({2, 5, 8, 10}));
      },
      "deeprnn::LSTM: expected 2-D \\(unbatched\\) or 3-D \\(batched\\) "
      "input, got a 4-D tensor"));
  EXPECT_TRUE(throws_matching(
      [&] { lstm->forward(torch::randn({5})); }, "deeprnn::LSTM: .*1-D"));
  // Shapes and dtypes are the operator's checks; its messages name it.
  EXPECT_TRUE(throws_matching(
      [&] {
        lstm->forward(x, std::tuple(torch::randn({1, 8, 32}), c0));
      },
      "deeprnn.lstm: hx"));
  EXPECT_TRUE(throws_matching(
      [&] {
        lstm->forward(x, std::tuple(h0, torch::randn({2, 8, 31})));
      },
      "deeprnn.lstm: cx"));
  EXPECT_TRUE(throws_matching(
      [&] {
        lstm->forward(torch::randn({5, 8, 7}));
      },
      "deeprnn.lstm: input.*10"));
  EXPECT_TRUE(throws_matching(
      [&] { lstm->forward(x.to(torch::kDouble)); }, "deeprnn.lstm: .*dtype"));
  // States of the wrong rank for the input are the module's to report.
  EXPECT_TRUE(throws_matching(
      [&] { lstm->forward(x, std::tuple(h0[0], c0)); },
      "deeprnn::LSTM: for batched 3-D input, h_0 must be 3-D, got a 2-D"));
  EXPECT_TRUE(throws_matching(
      [&] { lstm->forward(x[0], std::tuple(h0, c0)); },
      "deeprnn::LSTM: for unbatched 2-D input, h_0 must be 2-D, got a 3-D"));
  EXPECT_TRUE(throws_matching(
      [&] { lstm->forward(x, std::tuple(h0, Tensor())); },
      "deeprnn::LSTM: the initial state"));

  const auto [output, state] = lstm->forward(x, std::tuple(h0, c0));
  EXPECT_TRUE(torch::equal(output, expected));
  EXPECT_TRUE(torch::equal(std::get<0>(state), std::get<0>(expected_state)));
  EXPECT_TRUE(torch::equal(std::get<1>(state), std::get<1>(expected_state)));
}

TEST(ModuleErrors, SingleStateModulesReportBadHx) {
  deeprnn::GRU gru(deeprnn::GRUOptions(4, 6).bidirectional(true));
  const Tensor x = torch::randn({3, 2, 4});
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward(x, torch::randn({2, 6}));
      },
      "deeprnn::GRU: for batched 3-D input, hx must be 3-D, got a 2-D"));
  EXPECT_TRUE(throws_matching(
      [&] {
        gru->forward(x, torch::randn({1, 2, 6}));
      },
      "deeprnn.gru: hx"));
  deeprnn::RNN rnn(deeprnn::RNNOptions(4, 6).nonlinearity(torch::kReLU));
  EXPECT_TRUE(throws_matching(
      [&] {
        rnn->forward(x[0], torch::randn({1, 2, 6}));
      },
      "deeprnn::RNN: for unbatched 2-D input, hx must be 2-D, got a 3-D"));
  EXPECT_TRUE(throws_matching(
      [&] {
        rnn->forward(x, torch::randn({1, 2, 5}));
      },
      "deeprnn.rnn_relu: hx"));
  // Still usable.
  EXPECT_EQ(
      std::get<0>(gru->forward(x)).sizes(), (torch::IntArrayRef{3, 2, 12}));
  EXPECT_EQ(
      std::get<1>(rnn->forward(x)).sizes(), (torch::IntArrayRef{1, 2, 6}));
}

// ---------------------------------------------------------------------------
// Cloning, dtype moves, checkpoints, user modules.

TEST(ModuleUse, CloneIsDeepAndComputesTheSame) {
  torch::manual_seed(5);
  deeprnn::LSTM lstm(
      deeprnn::LSTMOptions(4, 6).num_layers(2).bidirectional(true).proj_size(
          3));
  const auto copy = std::dynamic_pointer_cast<deeprnn::LSTMImpl>(lstm->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_EQ(copy->flat_weights_names(), lstm->flat_weights_names());
  EXPECT_EQ(copy->options.proj_size(), 3);
  const auto ours = lstm->named_parameters();
  for (const auto& item : copy->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), ours[item.key()])) << item.key();
    EXPECT_NE(item.value().data_ptr(), ours[item.key()].data_ptr());
  }
  const Tensor x = torch::randn({5, 2, 4});
  EXPECT_TRUE(torch::equal(
      std::get<0>(copy->forward(x)), std::get<0>(lstm->forward(x))));
  // The clone computes with its own parameters.
  {
    torch::NoGradGuard no_grad;
    copy->named_parameters()["weight_ih_l0"].add_(1.0);
  }
  EXPECT_FALSE(torch::equal(
      std::get<0>(copy->forward(x)), std::get<0>(lstm->forward(x))));
}

TEST(ModuleUse, MovesToDouble) {
  deeprnn::GRU gru(deeprnn::GRUOptions(4, 6).num_layers(2));
  gru->to(torch::kDouble);
  for (const auto& p : gru->flat_weights()) {
    EXPECT_EQ(p.scalar_type(), torch::kDouble);
  }
  const Tensor x = torch::randn({3, 2, 4}, torch::kDouble);
  const auto [output, hy] = gru->forward(x);
  EXPECT_EQ(output.scalar_type(), torch::kDouble);
  EXPECT_EQ(hy.sizes(), (torch::IntArrayRef{2, 2, 6}));
  // And the float input is now the mismatch.
  EXPECT_TRUE(throws_matching(
      [&] { gru->forward(x.to(torch::kFloat)); }, "deeprnn.gru: .*dtype"));
}

TEST(ModuleUse, LoadsATorchNNCheckpoint) {
  torch::manual_seed(9);
  torch::nn::LSTM theirs(
      torch::nn::LSTMOptions(4, 6).num_layers(2).bidirectional(true));
  std::stringstream checkpoint;
  torch::save(theirs, checkpoint);
  deeprnn::LSTM ours(
      deeprnn::LSTMOptions(4, 6).num_layers(2).bidirectional(true));
  torch::load(ours, checkpoint);
  const Tensor x = torch::randn({5, 3, 4});
  const auto [expected, expected_state] = theirs->forward(x);
  const auto [output, state] = ours->forward(x);
  EXPECT_TRUE(tensors_close(output, expected, 1e-5));
  EXPECT_TRUE(
      tensors_close(std::get<1>(state), std::get<1>(expected_state), 1e-5));
}

TEST(ModuleUse, AnyModuleUsesTheDefaultState) {
  // FORWARD_HAS_DEFAULT_ARGS lets type-erased containers call forward(x).
  torch::nn::AnyModule any_gru(deeprnn::GRU(4, 6));
  const auto [output, hy] =
      any_gru.forward<std::tuple<Tensor, Tensor>>(torch::randn({3, 2, 4}));
  EXPECT_EQ(output.sizes(), (torch::IntArrayRef{3, 2, 6}));
  torch::nn::AnyModule any_lstm(deeprnn::LSTM(4, 6));
  const auto [lstm_output, state] =
      any_lstm.forward<std::tuple<Tensor, std::tuple<Tensor, Tensor>>>(
          torch::randn({3, 2, 4}));
  EXPECT_EQ(std::get<1>(state).sizes(), (torch::IntArrayRef{1, 2, 6}));
}

// A user's model that holds a deeprnn module as a submodule.
struct TaggerImpl : torch::nn::Module {
  TaggerImpl()
      : encoder(register_module(
            "encoder",
            deeprnn::LSTM(deeprnn::LSTMOptions(4, 8)
                              .num_layers(2)
                              .bidirectional(true)
                              .batch_first(true)))),
        head(register_module("head", torch::nn::Linear(16, 3))) {}

  Tensor forward(const Tensor& tokens) {
    return head(std::get<0>(encoder(tokens)));
  }

  deeprnn::LSTM encoder;
  torch::nn::Linear head;
};
TORCH_MODULE(Tagger);

TEST(ModuleUse, TrainsInsideAUserModule) {
  torch::manual_seed(13);
  Tagger tagger;
  tagger->to(torch::kDouble);
  const auto names = tagger->named_parameters().keys();
  EXPECT_NE(
      std::find(names.begin(), names.end(), "encoder.weight_hh_l1_reverse"),
      names.end());

  std::ostringstream printed_model;
  printed_model << *tagger;
  EXPECT_NE(
      printed_model.str().find("(encoder): deeprnn::LSTM(input_size=4"),
      std::string::npos)
      << printed_model.str();

  const Tensor x = torch::randn({6, 5, 4}, torch::kDouble);
  const Tensor target = torch::randn({6, 5, 3}, torch::kDouble);
  torch::optim::Adam optimizer(tagger->parameters(), 0.02);
  double first_loss = 0.0, last_loss = 0.0;
  for (int step = 0; step < 30; ++step) {
    optimizer.zero_grad();
    const Tensor loss = torch::mse_loss(tagger->forward(x), target);
    loss.backward();
    if (step == 0) {
      for (const auto& p : tagger->encoder->parameters()) {
        ASSERT_TRUE(p.grad().defined());
        EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
      }
      first_loss = loss.item<double>();
    }
    last_loss = loss.item<double>();
    optimizer.step();
  }
  EXPECT_LT(last_loss, 0.8 * first_loss);
}

} // namespace
