// The C++ modules under CPU autocast (a C++ program turns it on through
// at::autocast, as torch.autocast does): float32 modules run in bfloat16,
// exactly as a bfloat16 copy of the module would, return torch.nn's result
// dtypes, and send float32 gradients to their float32 parameters. Python
// tests (tests/python/test_autocast.py) compare with torch.nn itself.

#include <deeprnn/deeprnn.h>

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <vector>

namespace {

using torch::Tensor;

// torch.autocast("cpu", dtype) for the scope of the object.
class CpuAutocast {
 public:
  explicit CpuAutocast(at::ScalarType dtype)
      : was_enabled_(at::autocast::is_autocast_enabled(at::kCPU)),
        previous_dtype_(at::autocast::get_autocast_dtype(at::kCPU)) {
    at::autocast::set_autocast_dtype(at::kCPU, dtype);
    at::autocast::set_autocast_enabled(at::kCPU, true);
    at::autocast::increment_nesting();
  }
  ~CpuAutocast() {
    // Leaving the outermost region drops the cached parameter casts.
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(at::kCPU, was_enabled_);
    at::autocast::set_autocast_dtype(at::kCPU, previous_dtype_);
  }
  CpuAutocast(const CpuAutocast&) = delete;
  CpuAutocast& operator=(const CpuAutocast&) = delete;

 private:
  bool was_enabled_;
  at::ScalarType previous_dtype_;
};

// Runs `forward` on a float32 module under bfloat16 autocast and on a
// bfloat16 clone without it; the results and the gradients of every
// parameter must be the same numbers, the results in `result_dtypes`.
template <typename Module, typename Forward>
void expect_autocast_is_a_bfloat16_copy(
    Module module,
    Forward forward,
    const std::vector<at::ScalarType>& result_dtypes) {
  auto low = std::dynamic_pointer_cast<typename Module::ContainedType>(
      module->clone());
  low->to(at::kBFloat16);
  const Tensor x = torch::randn({6, 4, 5});

  std::vector<Tensor> got;
  {
    CpuAutocast autocast(at::kBFloat16);
    got = forward(*module, x);
  }
  const std::vector<Tensor> expected = forward(*low, x.to(at::kBFloat16));
  ASSERT_EQ(got.size(), result_dtypes.size());
  Tensor loss_got = torch::zeros({}, torch::kDouble);
  Tensor loss_expected = torch::zeros({}, torch::kDouble);
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(got[i].scalar_type(), result_dtypes[i]);
    EXPECT_EQ(expected[i].scalar_type(), at::kBFloat16);
    EXPECT_TRUE(torch::equal(got[i], expected[i].to(result_dtypes[i])));
    // Weights a bfloat16 holds exactly, so no path rounds them twice.
    const Tensor weight =
        torch::randn(got[i].sizes()).to(at::kBFloat16).to(at::kDouble);
    loss_got = loss_got + (got[i].to(at::kDouble) * weight).sum();
    loss_expected =
        loss_expected + (expected[i].to(at::kDouble) * weight).sum();
  }
  loss_got.backward();
  loss_expected.backward();
  auto low_parameters = low->named_parameters();
  for (const auto& item : module->named_parameters()) {
    SCOPED_TRACE(item.key());
    const Tensor& grad = item.value().grad();
    ASSERT_TRUE(grad.defined());
    EXPECT_EQ(grad.scalar_type(), at::kFloat);
    EXPECT_TRUE(
        torch::equal(grad, low_parameters[item.key()].grad().to(at::kFloat)));
  }
}

bool onednn_lstm_enabled() {
  return at::hasMKLDNN() && at::globalContext().userEnabledMkldnn();
}

TEST(Autocast, LstmRunsInBfloat16WithFloat32Gradients) {
  torch::manual_seed(1);
  // oneDNN's fused LSTM (torch.nn's CPU path) returns every result in the
  // autocast dtype; ATen's cell-by-cell path keeps c (and so h) in float32.
  const auto dtype = onednn_lstm_enabled() ? at::kBFloat16 : at::kFloat;
  expect_autocast_is_a_bfloat16_copy(
      deeprnn::LSTM(
          deeprnn::LSTMOptions(5, 8).num_layers(2).bidirectional(true)),
      [](deeprnn::LSTMImpl& lstm, const Tensor& x) {
        auto [output, state] = lstm.forward(x);
        return std::vector<Tensor>{
            output, std::get<0>(state), std::get<1>(state)};
      },
      {dtype, dtype, dtype});
}

TEST(Autocast, ProjectedLstmKeepsItsCellInFloat32) {
  torch::manual_seed(2);
  expect_autocast_is_a_bfloat16_copy(
      deeprnn::LSTM(deeprnn::LSTMOptions(5, 8).num_layers(2).proj_size(3)),
      [](deeprnn::LSTMImpl& lstm, const Tensor& x) {
        auto [output, state] = lstm.forward(x);
        return std::vector<Tensor>{
            output, std::get<0>(state), std::get<1>(state)};
      },
      {at::kBFloat16, at::kBFloat16, at::kFloat});
}

TEST(Autocast, GruKeepsItsStateInFloat32) {
  torch::manual_seed(3);
  expect_autocast_is_a_bfloat16_copy(
      deeprnn::GRU(deeprnn::GRUOptions(5, 8).num_layers(2).bidirectional(true)),
      [](deeprnn::GRUImpl& gru, const Tensor& x) {
        auto [output, h_n] = gru.forward(x);
        return std::vector<Tensor>{output, h_n};
      },
      {at::kFloat, at::kFloat});
}

TEST(Autocast, RnnRunsInBfloat16) {
  torch::manual_seed(4);
  expect_autocast_is_a_bfloat16_copy(
      deeprnn::RNN(deeprnn::RNNOptions(5, 8).num_layers(2).bidirectional(true)),
      [](deeprnn::RNNImpl& rnn, const Tensor& x) {
        auto [output, h_n] = rnn.forward(x);
        return std::vector<Tensor>{output, h_n};
      },
      {at::kBFloat16, at::kBFloat16});
}

TEST(Autocast, Float64IsLeftAlone) {
  torch::manual_seed(5);
  deeprnn::LSTM lstm(deeprnn::LSTMOptions(5, 8).num_layers(2));
  lstm->to(at::kDouble);
  const Tensor x = torch::randn({6, 4, 5}, torch::kDouble);
  auto [expected, expected_state] = lstm->forward(x);
  CpuAutocast autocast(at::kBFloat16);
  auto [output, state] = lstm->forward(x);
  EXPECT_EQ(output.scalar_type(), at::kDouble);
  EXPECT_TRUE(torch::equal(output, expected));
  EXPECT_TRUE(torch::equal(std::get<0>(state), std::get<0>(expected_state)));
  EXPECT_TRUE(torch::equal(std::get<1>(state), std::get<1>(expected_state)));
}

} // namespace
