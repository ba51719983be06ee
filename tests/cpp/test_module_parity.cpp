// deeprnn::RNN / GRU / LSTM against torch::nn::RNN / GRU / LSTM with the same
// parameters (copied by name): outputs, final states and every gradient, in
// float64, over the options a user can combine.

#include <deeprnn/deeprnn.h>

#include "test_helpers.h"

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>

namespace {

using deeprnn_test::fresh_leaf;
using deeprnn_test::tensors_close;
using torch::Tensor;

enum class Mode { kLSTM, kGRU, kRNNTanh, kRNNReLU };

struct Case {
  Mode mode;
  int64_t num_layers;
  bool bidirectional;
  bool batch_first;
  bool bias;
  bool with_state;
  bool unbatched;
  int64_t proj_size; // LSTM only
  bool training = true;
  double dropout = 0.0;
};

std::string describe(const Case& c) {
  static const char* const names[] = {"LSTM", "GRU", "RNN(tanh)", "RNN(relu)"};
  std::ostringstream stream;
  stream << names[static_cast<int>(c.mode)] << " layers=" << c.num_layers
         << " bidirectional=" << c.bidirectional
         << " batch_first=" << c.batch_first << " bias=" << c.bias
         << " with_state=" << c.with_state << " unbatched=" << c.unbatched
         << " proj_size=" << c.proj_size << " training=" << c.training
         << " dropout=" << c.dropout;
  return stream.str();
}

// A module of either library behind one call shape: (x, h0, c0) ->
// (output, hy, cy); undefined h0 means "no state given", cy is undefined
// outside LSTM.
struct Runner {
  std::shared_ptr<torch::nn::Module> module;
  std::function<std::tuple<Tensor, Tensor, Tensor>(
      const Tensor&,
      const Tensor&,
      const Tensor&)>
      forward;
};

template <typename Impl>
Runner lstm_runner(std::shared_ptr<Impl> impl) {
  return {impl, [impl](const Tensor& x, const Tensor& h0, const Tensor& c0) {
            auto [output, state] = h0.defined()
                ? impl->forward(x, std::make_tuple(h0, c0))
                : impl->forward(x);
            return std::make_tuple(
                output, std::get<0>(state), std::get<1>(state));
          }};
}

template <typename Impl>
Runner single_state_runner(std::shared_ptr<Impl> impl) {
  return {impl, [impl](const Tensor& x, const Tensor& h0, const Tensor&) {
            auto [output, hy] = impl->forward(x, h0);
            return std::make_tuple(output, hy, Tensor());
          }};
}

// torch::nn's C++ modules take batched input only; torch.nn in Python takes
// unbatched input by adding a batch dimension of 1, which is what the
// reference does here so that deeprnn can be held to that behaviour.
Runner unbatched_via_batched(Runner batched, bool batch_first) {
  const int64_t batch_dim = batch_first ? 0 : 1;
  auto forward = batched.forward;
  return {
      batched.module,
      [forward, batch_dim](
          const Tensor& x, const Tensor& h0, const Tensor& c0) {
        auto [output, hy, cy] = forward(
            x.unsqueeze(batch_dim),
            h0.defined() ? h0.unsqueeze(1) : h0,
            c0.defined() ? c0.unsqueeze(1) : c0);
        return std::make_tuple(
            output.squeeze(batch_dim),
            hy.squeeze(1),
            cy.defined() ? cy.squeeze(1) : cy);
      }};
}

Runner make_torch_runner(const Case& c, int64_t input_size, int64_t hidden) {
  Runner runner;
  switch (c.mode) {
    case Mode::kLSTM:
      runner = lstm_runner(std::make_shared<torch::nn::LSTMImpl>(
          torch::nn::LSTMOptions(input_size, hidden)
              .num_layers(c.num_layers)
              .bias(c.bias)
              .batch_first(c.batch_first)
              .dropout(c.dropout)
              .bidirectional(c.bidirectional)
              .proj_size(c.proj_size)));
      break;
    case Mode::kGRU:
      runner = single_state_runner(std::make_shared<torch::nn::GRUImpl>(
          torch::nn::GRUOptions(input_size, hidden)
              .num_layers(c.num_layers)
              .bias(c.bias)
              .batch_first(c.batch_first)
              .dropout(c.dropout)
              .bidirectional(c.bidirectional)));
      break;
    case Mode::kRNNTanh:
    case Mode::kRNNReLU: {
      torch::nn::RNNOptions options(input_size, hidden);
      options.num_layers(c.num_layers)
          .bias(c.bias)
          .batch_first(c.batch_first)
          .dropout(c.dropout)
          .bidirectional(c.bidirectional);
      if (c.mode == Mode::kRNNReLU) {
        options.nonlinearity(torch::kReLU);
      }
      runner =
          single_state_runner(std::make_shared<torch::nn::RNNImpl>(options));
      break;
    }
  }
  return c.unbatched ? unbatched_via_batched(runner, c.batch_first) : runner;
}

Runner make_deeprnn_runner(const Case& c, int64_t input_size, int64_t hidden) {
  switch (c.mode) {
    case Mode::kLSTM:
      return lstm_runner(std::make_shared<deeprnn::LSTMImpl>(
          deeprnn::LSTMOptions(input_size, hidden)
              .num_layers(c.num_layers)
              .bias(c.bias)
              .batch_first(c.batch_first)
              .dropout(c.dropout)
              .bidirectional(c.bidirectional)
              .proj_size(c.proj_size)));
    case Mode::kGRU:
      return single_state_runner(std::make_shared<deeprnn::GRUImpl>(
          deeprnn::GRUOptions(input_size, hidden)
              .num_layers(c.num_layers)
              .bias(c.bias)
              .batch_first(c.batch_first)
              .dropout(c.dropout)
              .bidirectional(c.bidirectional)));
    case Mode::kRNNTanh:
    case Mode::kRNNReLU:
      break;
  }
  deeprnn::RNNOptions options(input_size, hidden);
  options.num_layers(c.num_layers)
      .bias(c.bias)
      .batch_first(c.batch_first)
      .dropout(c.dropout)
      .bidirectional(c.bidirectional);
  if (c.mode == Mode::kRNNReLU) {
    options.nonlinearity(torch::kReLU);
  }
  return single_state_runner(std::make_shared<deeprnn::RNNImpl>(options));
}

// Copies every parameter of `from` into the parameter of the same name of
// `to`, after checking that both have the same names in the same order.
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

void check_parity(const Case& c) {
  SCOPED_TRACE(describe(c));
  const int64_t steps = 5, batch = 3, input_size = 4, hidden = 6;
  const bool is_lstm = c.mode == Mode::kLSTM;
  const int64_t num_directions = c.bidirectional ? 2 : 1;
  const int64_t real_hidden = c.proj_size > 0 ? c.proj_size : hidden;
  const auto options = torch::TensorOptions().dtype(torch::kDouble);

  Runner reference = make_torch_runner(c, input_size, hidden);
  Runner ours = make_deeprnn_runner(c, input_size, hidden);
  reference.module->to(torch::kDouble);
  ours.module->to(torch::kDouble);
  reference.module->train(c.training);
  ours.module->train(c.training);
  copy_parameters_by_name(*reference.module, *ours.module);

  std::vector<int64_t> input_shape = c.batch_first
      ? std::vector<int64_t>{batch, steps, input_size}
      : std::vector<int64_t>{steps, batch, input_size};
  std::vector<int64_t> h_shape = {
      c.num_layers * num_directions, batch, real_hidden};
  std::vector<int64_t> c_shape = {c.num_layers * num_directions, batch, hidden};
  if (c.unbatched) {
    input_shape.erase(input_shape.begin() + (c.batch_first ? 0 : 1));
    h_shape.erase(h_shape.begin() + 1);
    c_shape.erase(c_shape.begin() + 1);
  }
  const Tensor x = torch::randn(input_shape, options);
  const Tensor h0 = c.with_state ? torch::randn(h_shape, options) : Tensor();
  const Tensor c0 =
      c.with_state && is_lstm ? torch::randn(c_shape, options) : Tensor();

  const Tensor x_ref = fresh_leaf(x), h0_ref = fresh_leaf(h0),
               c0_ref = fresh_leaf(c0);
  const Tensor x_ours = fresh_leaf(x), h0_ours = fresh_leaf(h0),
               c0_ours = fresh_leaf(c0);
  auto [output_ref, hy_ref, cy_ref] = reference.forward(x_ref, h0_ref, c0_ref);
  auto [output, hy, cy] = ours.forward(x_ours, h0_ours, c0_ours);

  ASSERT_TRUE(tensors_close(output, output_ref)) << "output";
  ASSERT_TRUE(tensors_close(hy, hy_ref)) << "h_n";
  if (is_lstm) {
    ASSERT_TRUE(tensors_close(cy, cy_ref)) << "c_n";
  }

  const Tensor grad_output = torch::randn_like(output_ref);
  const Tensor grad_hy = torch::randn_like(hy_ref);
  const Tensor grad_cy = is_lstm ? torch::randn_like(cy_ref) : Tensor();
  const auto loss = [&](const Tensor& out, const Tensor& h, const Tensor& cs) {
    Tensor total = (out * grad_output).sum() + (h * grad_hy).sum();
    return is_lstm ? total + (cs * grad_cy).sum() : total;
  };
  loss(output_ref, hy_ref, cy_ref).backward();
  loss(output, hy, cy).backward();

  EXPECT_TRUE(tensors_close(x_ours.grad(), x_ref.grad())) << "grad input";
  if (c.with_state) {
    EXPECT_TRUE(tensors_close(h0_ours.grad(), h0_ref.grad())) << "grad h_0";
    if (is_lstm) {
      EXPECT_TRUE(tensors_close(c0_ours.grad(), c0_ref.grad())) << "grad c_0";
    }
  }
  const auto ours_parameters = ours.module->named_parameters();
  for (const auto& item : reference.module->named_parameters()) {
    EXPECT_TRUE(
        tensors_close(ours_parameters[item.key()].grad(), item.value().grad()))
        << "grad of " << item.key();
  }
}

class ModuleParity : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(20240601);
  }
};

TEST_F(ModuleParity, LSTM) {
  for (int64_t layers : {1, 2, 3}) {
    for (bool bidirectional : {false, true}) {
      for (bool batch_first : {false, true}) {
        for (bool bias : {false, true}) {
          for (bool with_state : {false, true}) {
            check_parity(
                {Mode::kLSTM,
                 layers,
                 bidirectional,
                 batch_first,
                 bias,
                 with_state,
                 false,
                 0});
          }
        }
      }
    }
  }
}

TEST_F(ModuleParity, LSTMWithProjection) {
  for (int64_t layers : {1, 2, 3}) {
    for (bool bidirectional : {false, true}) {
      for (bool batch_first : {false, true}) {
        for (bool bias : {false, true}) {
          for (bool with_state : {false, true}) {
            check_parity(
                {Mode::kLSTM,
                 layers,
                 bidirectional,
                 batch_first,
                 bias,
                 with_state,
                 false,
                 4});
          }
        }
      }
    }
  }
}

TEST_F(ModuleParity, GRU) {
  for (int64_t layers : {1, 2, 3}) {
    for (bool bidirectional : {false, true}) {
      for (bool batch_first : {false, true}) {
        for (bool bias : {false, true}) {
          for (bool with_state : {false, true}) {
            check_parity(
                {Mode::kGRU,
                 layers,
                 bidirectional,
                 batch_first,
                 bias,
                 with_state,
                 false,
                 0});
          }
        }
      }
    }
  }
}

TEST_F(ModuleParity, RNNTanhAndReLU) {
  for (Mode mode : {Mode::kRNNTanh, Mode::kRNNReLU}) {
    for (int64_t layers : {1, 2, 3}) {
      for (bool bidirectional : {false, true}) {
        for (bool batch_first : {false, true}) {
          for (bool bias : {false, true}) {
            for (bool with_state : {false, true}) {
              check_parity(
                  {mode,
                   layers,
                   bidirectional,
                   batch_first,
                   bias,
                   with_state,
                   false,
                   0});
            }
          }
        }
      }
    }
  }
}

TEST_F(ModuleParity, UnbatchedInput) {
  for (Mode mode : {Mode::kLSTM, Mode::kGRU, Mode::kRNNTanh, Mode::kRNNReLU}) {
    for (bool bidirectional : {false, true}) {
      for (bool batch_first : {false, true}) {
        for (bool with_state : {false, true}) {
          check_parity(
              {mode, 2, bidirectional, batch_first, true, with_state, true, 0});
        }
      }
    }
  }
  // Projection changes the width of h_0 but not of c_0.
  check_parity({Mode::kLSTM, 2, true, false, true, true, true, 3});
}

TEST_F(ModuleParity, EvalModeIgnoresDropout) {
  // train = is_training() must reach the operator: in eval mode dropout is
  // off, so both libraries give the same deterministic result.
  for (Mode mode : {Mode::kLSTM, Mode::kGRU, Mode::kRNNTanh}) {
    Case c{mode, 3, true, false, true, true, false, 0};
    c.training = false;
    c.dropout = 0.5;
    check_parity(c);
  }
}

TEST_F(ModuleParity, DropoutOneZeroesEveryInnerLayer) {
  // With p = 1 every layer past the first sees zeros in training mode in
  // both libraries, so even training-mode dropout is deterministic here.
  for (Mode mode : {Mode::kLSTM, Mode::kGRU}) {
    Case c{mode, 2, false, false, true, true, false, 0};
    c.dropout = 1.0;
    check_parity(c);
  }
}

TEST(ModuleDropout, TrainingModeDropsAndEvalModeDoesNot) {
  torch::manual_seed(7);
  deeprnn::LSTM lstm(deeprnn::LSTMOptions(8, 16).num_layers(2).dropout(0.5));
  const Tensor x = torch::randn({6, 4, 8});
  lstm->eval();
  const Tensor eval_a = std::get<0>(lstm->forward(x));
  const Tensor eval_b = std::get<0>(lstm->forward(x));
  EXPECT_TRUE(torch::equal(eval_a, eval_b));
  lstm->train();
  torch::manual_seed(1);
  const Tensor train_a = std::get<0>(lstm->forward(x));
  torch::manual_seed(1);
  const Tensor train_b = std::get<0>(lstm->forward(x));
  const Tensor train_c = std::get<0>(lstm->forward(x));
  // Same seed, same masks; a new draw, different masks.
  EXPECT_TRUE(torch::equal(train_a, train_b));
  EXPECT_FALSE(torch::allclose(train_a, train_c));
  EXPECT_FALSE(torch::allclose(train_a, eval_a));
}

} // namespace
