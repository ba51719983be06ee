// The operators as a C++ user reaches them: schemas in the dispatcher, and
// the functional API checked against a reference written out here with
// plain ATen ops (no torch::nn), forward and gradients, in float64.

#include <deeprnn/deeprnn.h>

#include "test_helpers.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;
using deeprnn_test::fresh_leaf;
using deeprnn_test::tensors_close;
using deeprnn_test::throws_matching;

// ---------------------------------------------------------------------------
// Schemas and kernels in the dispatcher.

std::optional<c10::OperatorHandle> find_op(const std::string& name) {
  return c10::Dispatcher::singleton().findSchema({"deeprnn::" + name, ""});
}

std::vector<std::string> argument_names(const c10::OperatorHandle& op) {
  std::vector<std::string> names;
  for (const auto& argument : op.schema().arguments()) {
    names.push_back(argument.name());
  }
  return names;
}

TEST(Dispatcher, EveryOperatorHasASchema) {
  for (const char* name :
       {"lstm",
        "gru",
        "rnn_tanh",
        "rnn_relu",
        "_rnn_forward",
        "_rnn_backward",
        "reserve_size"}) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(find_op(name).has_value());
  }
}

TEST(Dispatcher, PublicSchemasFollowTheContract) {
  const std::vector<std::string> lstm_arguments = {
      "input",
      "hx",
      "cx",
      "params",
      "has_biases",
      "num_layers",
      "dropout",
      "train",
      "bidirectional",
      "batch_first",
      "lengths"};
  const auto lstm = find_op("lstm");
  ASSERT_TRUE(lstm.has_value());
  EXPECT_EQ(argument_names(*lstm), lstm_arguments);
  EXPECT_EQ(lstm->schema().returns().size(), 3u);
  // lengths is optional and defaults to None, so calls without it (and
  // code written before it existed) keep working.
  const auto& lengths = lstm->schema().arguments().back();
  EXPECT_TRUE(lengths.type()->kind() == c10::TypeKind::OptionalType);
  EXPECT_TRUE(lengths.default_value().has_value());
  EXPECT_TRUE(lengths.default_value()->isNone());

  std::vector<std::string> single_state_arguments = lstm_arguments;
  single_state_arguments.erase(single_state_arguments.begin() + 2);
  for (const char* name : {"gru", "rnn_tanh", "rnn_relu"}) {
    SCOPED_TRACE(name);
    const auto op = find_op(name);
    ASSERT_TRUE(op.has_value());
    EXPECT_EQ(argument_names(*op), single_state_arguments);
    EXPECT_EQ(op->schema().returns().size(), 2u);
  }
}

TEST(Dispatcher, KernelsAreRegistered) {
  // The private ops carry the work: each has its own CPU kernel.
  for (const char* name : {"_rnn_forward", "_rnn_backward"}) {
    SCOPED_TRACE(name);
    const auto op = find_op(name);
    ASSERT_TRUE(op.has_value());
    EXPECT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::CPU));
    EXPECT_TRUE(op->hasComputedKernelForDispatchKey(c10::DispatchKey::Meta));
  }
  // The public ops must be callable on CPU tensors and be differentiable;
  // how they are registered (CPU, composite, Autograd) is the core's choice,
  // so look at the computed dispatch table.
  for (const char* name : {"lstm", "gru", "rnn_tanh", "rnn_relu"}) {
    SCOPED_TRACE(name);
    const auto op = find_op(name);
    ASSERT_TRUE(op.has_value());
    EXPECT_TRUE(op->hasComputedKernelForDispatchKey(c10::DispatchKey::CPU));
    EXPECT_TRUE(
        op->hasComputedKernelForDispatchKey(c10::DispatchKey::AutogradCPU));
  }
}

TEST(Functional, ReserveSizeIsPositiveAndGrowsWithTheProblem) {
  const int64_t small =
      deeprnn::reserve_size("lstm", 5, 3, 4, 6, 0, 1, false, false);
  const int64_t deeper =
      deeprnn::reserve_size("lstm", 5, 3, 4, 6, 0, 2, true, true);
  EXPECT_GT(small, 0);
  EXPECT_GT(deeper, small);
  EXPECT_GT(deeprnn::reserve_size("gru", 5, 3, 4, 6, 0, 1, false, false), 0);
}

// ---------------------------------------------------------------------------
// Reference: the recurrences written out step by step with ATen ops.

enum class Mode { kLSTM, kGRU, kRNNTanh, kRNNReLU };

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::kLSTM:
      return "lstm";
    case Mode::kGRU:
      return "gru";
    case Mode::kRNNTanh:
      return "rnn_tanh";
    case Mode::kRNNReLU:
      return "rnn_relu";
  }
  return "?";
}

int64_t gate_count(Mode mode) {
  return mode == Mode::kLSTM ? 4 : mode == Mode::kGRU ? 3 : 1;
}

struct LayerWeights {
  Tensor w_ih; // [G*H, I_l]
  Tensor w_hh; // [G*H, P]
  Tensor b_ih; // [G*H] or undefined
  Tensor b_hh; // [G*H] or undefined
  Tensor w_hr; // [P, H] or undefined
};

// One layer, one direction. x: [T, B, I_l], h: [B, P], c: [B, H] (LSTM).
// Returns output [T, B, P], h_T, c_T.
std::tuple<Tensor, Tensor, Tensor> reference_layer(
    Mode mode,
    const Tensor& x,
    Tensor h,
    Tensor c,
    const LayerWeights& w,
    bool reverse) {
  const int64_t steps = x.size(0);
  std::vector<Tensor> outputs(steps);
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t t = reverse ? steps - 1 - step : step;
    Tensor input_part = at::matmul(x[t], w.w_ih.t());
    Tensor hidden_part = at::matmul(h, w.w_hh.t());
    if (w.b_ih.defined()) {
      input_part = input_part + w.b_ih;
      hidden_part = hidden_part + w.b_hh;
    }
    if (mode == Mode::kLSTM) {
      const auto gates = (input_part + hidden_part).chunk(4, 1);
      const Tensor i = at::sigmoid(gates[0]);
      const Tensor f = at::sigmoid(gates[1]);
      const Tensor g = at::tanh(gates[2]);
      const Tensor o = at::sigmoid(gates[3]);
      c = f * c + i * g;
      h = o * at::tanh(c);
      if (w.w_hr.defined()) {
        h = at::matmul(h, w.w_hr.t());
      }
    } else if (mode == Mode::kGRU) {
      const auto gi = input_part.chunk(3, 1);
      const auto gh = hidden_part.chunk(3, 1);
      const Tensor r = at::sigmoid(gi[0] + gh[0]);
      const Tensor z = at::sigmoid(gi[1] + gh[1]);
      const Tensor n = at::tanh(gi[2] + r * gh[2]);
      h = (1 - z) * n + z * h;
    } else {
      const Tensor pre = input_part + hidden_part;
      h = mode == Mode::kRNNTanh ? at::tanh(pre) : at::relu(pre);
    }
    outputs[t] = h;
  }
  return {at::stack(outputs), h, c};
}

struct Problem {
  Mode mode;
  int64_t num_layers;
  bool bidirectional;
  bool batch_first;
  bool bias;
  bool with_state;
  int64_t proj_size;
};

std::string describe(const Problem& p) {
  std::ostringstream stream;
  stream << mode_name(p.mode) << " layers=" << p.num_layers
         << " bidirectional=" << p.bidirectional
         << " batch_first=" << p.batch_first << " bias=" << p.bias
         << " with_state=" << p.with_state << " proj_size=" << p.proj_size;
  return stream.str();
}

// The whole stack. x: [T, B, I] or [B, T, I]; h0: [L*D, B, P];
// c0: [L*D, B, H]; params in _flat_weights order.
std::tuple<Tensor, Tensor, Tensor> reference_stack(
    const Problem& p,
    const Tensor& x,
    const Tensor& h0,
    const Tensor& c0,
    const std::vector<Tensor>& params) {
  const int64_t num_directions = p.bidirectional ? 2 : 1;
  const int64_t per_direction =
      2 + (p.bias ? 2 : 0) + (p.proj_size > 0 ? 1 : 0);
  Tensor layer_input = p.batch_first ? x.transpose(0, 1) : x;
  std::vector<Tensor> final_h;
  std::vector<Tensor> final_c;
  for (int64_t layer = 0; layer < p.num_layers; ++layer) {
    std::vector<Tensor> direction_outputs;
    for (int64_t direction = 0; direction < num_directions; ++direction) {
      const int64_t row = layer * num_directions + direction;
      size_t index = static_cast<size_t>(row * per_direction);
      LayerWeights w;
      w.w_ih = params[index++];
      w.w_hh = params[index++];
      if (p.bias) {
        w.b_ih = params[index++];
        w.b_hh = params[index++];
      }
      if (p.proj_size > 0) {
        w.w_hr = params[index++];
      }
      auto [output, h, c] = reference_layer(
          p.mode,
          layer_input,
          h0[row],
          p.mode == Mode::kLSTM ? c0[row] : Tensor(),
          w,
          direction == 1);
      direction_outputs.push_back(output);
      final_h.push_back(h);
      final_c.push_back(c);
    }
    layer_input = at::cat(direction_outputs, 2);
  }
  const Tensor output =
      p.batch_first ? layer_input.transpose(0, 1) : layer_input;
  return {
      output,
      at::stack(final_h),
      p.mode == Mode::kLSTM ? at::stack(final_c) : Tensor()};
}

std::vector<Tensor> random_params(
    const Problem& p,
    int64_t input_size,
    int64_t hidden_size) {
  const int64_t num_directions = p.bidirectional ? 2 : 1;
  const int64_t gate_size = gate_count(p.mode) * hidden_size;
  const int64_t real_hidden = p.proj_size > 0 ? p.proj_size : hidden_size;
  const auto options = at::TensorOptions().dtype(at::kDouble);
  std::vector<Tensor> params;
  for (int64_t layer = 0; layer < p.num_layers; ++layer) {
    const int64_t layer_input =
        layer == 0 ? input_size : num_directions * real_hidden;
    for (int64_t direction = 0; direction < num_directions; ++direction) {
      params.push_back(at::randn({gate_size, layer_input}, options) * 0.4);
      params.push_back(at::randn({gate_size, real_hidden}, options) * 0.4);
      if (p.bias) {
        params.push_back(at::randn({gate_size}, options) * 0.4);
        params.push_back(at::randn({gate_size}, options) * 0.4);
      }
      if (p.proj_size > 0) {
        params.push_back(at::randn({real_hidden, hidden_size}, options) * 0.4);
      }
    }
  }
  return params;
}

std::vector<Tensor> fresh_leaves(const std::vector<Tensor>& tensors) {
  std::vector<Tensor> leaves;
  for (const auto& tensor : tensors) {
    leaves.push_back(fresh_leaf(tensor));
  }
  return leaves;
}

// Runs the operator and the reference on the same random problem and
// compares outputs, final states and every gradient.
void check_against_reference(const Problem& p) {
  SCOPED_TRACE(describe(p));
  const int64_t steps = 5, batch = 3, input_size = 4, hidden_size = 6;
  const int64_t num_directions = p.bidirectional ? 2 : 1;
  const int64_t real_hidden = p.proj_size > 0 ? p.proj_size : hidden_size;
  const auto options = at::TensorOptions().dtype(at::kDouble);
  const bool is_lstm = p.mode == Mode::kLSTM;

  const Tensor x = p.batch_first
      ? at::randn({batch, steps, input_size}, options)
      : at::randn({steps, batch, input_size}, options);
  const Tensor h0 =
      at::randn({p.num_layers * num_directions, batch, real_hidden}, options);
  const Tensor c0 = is_lstm
      ? at::randn({p.num_layers * num_directions, batch, hidden_size}, options)
      : Tensor();
  const std::vector<Tensor> params = random_params(p, input_size, hidden_size);

  // The operator side.
  const Tensor x_op = fresh_leaf(x);
  const Tensor h0_op = p.with_state ? fresh_leaf(h0) : Tensor();
  const Tensor c0_op = p.with_state ? fresh_leaf(c0) : Tensor();
  const std::vector<Tensor> params_op = fresh_leaves(params);
  const auto optional_of = [](const Tensor& t) {
    return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
  };
  Tensor output_op, hy_op, cy_op;
  const int64_t layers = p.num_layers;
  if (is_lstm) {
    std::tie(output_op, hy_op, cy_op) = deeprnn::lstm(
        x_op,
        optional_of(h0_op),
        optional_of(c0_op),
        params_op,
        p.bias,
        layers,
        0.0,
        true,
        p.bidirectional,
        p.batch_first);
  } else {
    const auto op = p.mode == Mode::kGRU ? &deeprnn::gru
        : p.mode == Mode::kRNNTanh       ? &deeprnn::rnn_tanh
                                         : &deeprnn::rnn_relu;
    std::tie(output_op, hy_op) =
        op(x_op,
           optional_of(h0_op),
           params_op,
           p.bias,
           layers,
           0.0,
           true,
           p.bidirectional,
           p.batch_first,
           /*lengths=*/std::nullopt);
  }

  // The reference side; absent states are zeros.
  const Tensor x_ref = fresh_leaf(x);
  const Tensor h0_ref =
      p.with_state ? fresh_leaf(h0) : at::zeros_like(h0).requires_grad_();
  const Tensor c0_ref = !is_lstm ? Tensor()
      : p.with_state             ? fresh_leaf(c0)
                                 : at::zeros_like(c0).requires_grad_();
  const std::vector<Tensor> params_ref = fresh_leaves(params);
  auto [output_ref, hy_ref, cy_ref] =
      reference_stack(p, x_ref, h0_ref, c0_ref, params_ref);

  ASSERT_TRUE(tensors_close(output_op, output_ref)) << "output";
  ASSERT_TRUE(tensors_close(hy_op, hy_ref)) << "hy";
  if (is_lstm) {
    ASSERT_TRUE(tensors_close(cy_op, cy_ref)) << "cy";
  }

  // Weighted sums so that every output element gets its own gradient.
  const Tensor grad_output = at::randn_like(output_ref);
  const Tensor grad_hy = at::randn_like(hy_ref);
  const Tensor grad_cy = is_lstm ? at::randn_like(cy_ref) : Tensor();
  const auto loss =
      [&](const Tensor& output, const Tensor& hy, const Tensor& cy) {
        Tensor total = (output * grad_output).sum() + (hy * grad_hy).sum();
        if (is_lstm) {
          total = total + (cy * grad_cy).sum();
        }
        return total;
      };
  loss(output_op, hy_op, cy_op).backward();
  loss(output_ref, hy_ref, cy_ref).backward();

  EXPECT_TRUE(tensors_close(x_op.grad(), x_ref.grad())) << "grad input";
  if (p.with_state) {
    EXPECT_TRUE(tensors_close(h0_op.grad(), h0_ref.grad())) << "grad hx";
    if (is_lstm) {
      EXPECT_TRUE(tensors_close(c0_op.grad(), c0_ref.grad())) << "grad cx";
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(tensors_close(params_op[i].grad(), params_ref[i].grad()))
        << "grad of parameter " << i;
  }
}

TEST(FunctionalVsReference, OneLSTMLayer) {
  // The case DESIGN.md asks for explicitly: one layer, written out by hand.
  for (bool with_state : {false, true}) {
    for (bool bias : {false, true}) {
      check_against_reference(
          {Mode::kLSTM, 1, false, false, bias, with_state, 0});
    }
  }
}

TEST(FunctionalVsReference, AllModesStackedAndBidirectional) {
  for (Mode mode : {Mode::kLSTM, Mode::kGRU, Mode::kRNNTanh, Mode::kRNNReLU}) {
    for (int64_t layers : {1, 2}) {
      for (bool bidirectional : {false, true}) {
        for (bool batch_first : {false, true}) {
          check_against_reference(
              {mode, layers, bidirectional, batch_first, true, true, 0});
        }
      }
    }
  }
}

TEST(FunctionalVsReference, LSTMProjection) {
  for (int64_t layers : {1, 2}) {
    for (bool bidirectional : {false, true}) {
      for (bool bias : {false, true}) {
        check_against_reference(
            {Mode::kLSTM, layers, bidirectional, false, bias, true, 3});
      }
    }
  }
}

TEST(Functional, DoubleBackwardIsRefused) {
  const auto options = at::TensorOptions().dtype(at::kDouble);
  const Problem p{Mode::kLSTM, 1, false, false, true, false, 0};
  const Tensor x = at::randn({4, 2, 4}, options).requires_grad_();
  const auto params = fresh_leaves(random_params(p, 4, 5));
  EXPECT_TRUE(throws_matching(
      [&] {
        auto [output, hy, cy] = deeprnn::lstm(
            x,
            std::nullopt,
            std::nullopt,
            params,
            true,
            1,
            0.0,
            true,
            false,
            false);
        const auto grads = torch::autograd::grad(
            {output.sum()},
            {x},
            {},
            /*retain_graph=*/true,
            /*create_graph=*/true);
        torch::autograd::grad({grads[0].sum()}, {x});
      },
      "double backward"));
}

TEST(Functional, ErrorsNameTheOperatorAndArgument) {
  const auto options = at::TensorOptions().dtype(at::kDouble);
  const Problem p{Mode::kGRU, 1, false, false, true, false, 0};
  const auto params = random_params(p, 4, 5);
  const Tensor x = at::randn({3, 2, 4}, options);
  EXPECT_TRUE(throws_matching(
      [&] {
        deeprnn::gru(
            x[0], std::nullopt, params, true, 1, 0.0, false, false, false);
      },
      "deeprnn.gru.*3-D input"));
  EXPECT_TRUE(throws_matching(
      [&] {
        deeprnn::gru(
            x,
            at::randn({2, 2, 5}, options),
            params,
            true,
            1,
            0.0,
            false,
            false,
            false);
      },
      "deeprnn.gru.*hx"));
  EXPECT_TRUE(throws_matching(
      [&] {
        deeprnn::gru(
            x.to(at::kFloat),
            std::nullopt,
            params,
            true,
            1,
            0.0,
            false,
            false,
            false);
      },
      "deeprnn.gru.*dtype"));
  EXPECT_TRUE(throws_matching(
      [&] {
        deeprnn::gru(
            x, std::nullopt, params, true, 0, 0.0, false, false, false);
      },
      "deeprnn.gru.*num_layers"));
}

} // namespace
