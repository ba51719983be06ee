// One deeprnn module shared by 8 std::threads that run forward, and forward
// plus backward on their own graphs, at the same time: each thread's results
// are bitwise those of a serial run on the same input. Every thread gets a
// different input, so a buffer or cache shared by mistake between calls
// (the packed W_hh, the reserve, a scratch tensor) shows up as another
// thread's numbers, not only as a crash under ASan.

#include <deeprnn/deeprnn.h>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

using torch::Tensor;

constexpr int kThreads = 8;
constexpr int kRounds = 3; // each thread repeats its work, interleaving more
constexpr int64_t kSeqLen = 12, kBatch = 3, kInput = 5, kHidden = 7;
constexpr int64_t kLayers = 2;

// Intra-op threads would make the GEMMs' summation order depend on how many
// threads each call got while 8 callers compete (MKL adapts its team); one
// intra-op thread per call makes "bitwise equal to the serial run" a fair
// demand. Restored after each test.
class Threads : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_threads_ = at::get_num_threads();
    at::set_num_threads(1);
  }
  void TearDown() override {
    at::set_num_threads(saved_threads_);
  }

 private:
  int saved_threads_ = 1;
};

// Results of one call: outputs (output, hy[, cy]) and, when asked, the
// gradients of a fixed loss with respect to the input, the states and every
// parameter, computed with torch::autograd::grad so nothing accumulates in
// the shared parameters' .grad.
using Forward = std::function<
    std::vector<Tensor>(const Tensor& x, const Tensor& h0, const Tensor& c0)>;

std::vector<Tensor> run_once(
    const Forward& forward,
    const std::vector<Tensor>& parameters,
    const Tensor& x,
    const Tensor& h0,
    const Tensor& c0,
    bool with_backward) {
  if (!with_backward) {
    torch::NoGradGuard no_grad;
    return forward(x, h0, c0);
  }
  std::vector<Tensor> inputs = {
      x.detach().requires_grad_(), h0.detach().requires_grad_()};
  Tensor c0_leaf;
  if (c0.defined()) {
    c0_leaf = c0.detach().requires_grad_();
    inputs.push_back(c0_leaf);
  }
  std::vector<Tensor> outputs = forward(inputs[0], inputs[1], c0_leaf);
  // Weighted by fixed, distinct factors so every element of every output
  // matters to every gradient.
  Tensor loss = outputs[0].pow(2).sum();
  for (size_t i = 1; i < outputs.size(); ++i) {
    loss = loss + outputs[i].sin().sum() * static_cast<double>(i + 1);
  }
  inputs.insert(inputs.end(), parameters.begin(), parameters.end());
  std::vector<Tensor> grads = torch::autograd::grad({loss}, inputs);
  std::vector<Tensor> results;
  for (const Tensor& output : outputs) {
    results.push_back(output.detach());
  }
  results.insert(results.end(), grads.begin(), grads.end());
  return results;
}

// Runs every input serially, then all of them at once on kThreads threads
// (each thread kRounds times), and checks every concurrent result is
// bitwise the serial one.
void expect_concurrent_equals_serial(
    const std::string& name,
    const Forward& forward,
    const std::vector<Tensor>& parameters,
    bool with_c0,
    torch::ScalarType dtype,
    bool with_backward) {
  const auto options = torch::TensorOptions().dtype(dtype);
  std::vector<Tensor> xs, h0s, c0s;
  std::vector<std::vector<Tensor>> serial;
  for (int i = 0; i < kThreads; ++i) {
    xs.push_back(torch::randn({kSeqLen, kBatch, kInput}, options));
    h0s.push_back(torch::randn({kLayers * 2, kBatch, kHidden}, options));
    c0s.push_back(
        with_c0 ? torch::randn({kLayers * 2, kBatch, kHidden}, options)
                : Tensor());
    serial.push_back(
        run_once(forward, parameters, xs[i], h0s[i], c0s[i], with_backward));
  }

  std::vector<std::vector<std::vector<Tensor>>> concurrent(kThreads);
  std::vector<std::string> errors(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      // A new thread starts with torch's default intra-op setting.
      at::set_num_threads(1);
      // Start together, so the calls overlap.
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
        std::this_thread::yield();
      }
      try {
        for (int round = 0; round < kRounds; ++round) {
          concurrent[i].push_back(run_once(
              forward, parameters, xs[i], h0s[i], c0s[i], with_backward));
        }
      } catch (const std::exception& error) {
        errors[i] = error.what();
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }

  for (int i = 0; i < kThreads; ++i) {
    ASSERT_EQ(errors[i], "") << name << ": thread " << i << " threw";
    ASSERT_EQ(concurrent[i].size(), static_cast<size_t>(kRounds));
    for (int round = 0; round < kRounds; ++round) {
      const std::vector<Tensor>& got = concurrent[i][round];
      ASSERT_EQ(got.size(), serial[i].size());
      for (size_t k = 0; k < got.size(); ++k) {
        EXPECT_TRUE(torch::equal(got[k], serial[i][k]))
            << name << ": thread " << i << ", round " << round << ", result "
            << k << " differs from the serial run by "
            << (got[k] - serial[i][k]).abs().max().item<double>();
      }
    }
  }
}

template <typename ModuleHolder>
std::vector<Tensor> parameters_of(ModuleHolder& module) {
  std::vector<Tensor> parameters;
  for (const auto& parameter : module->parameters()) {
    parameters.push_back(parameter);
  }
  return parameters;
}

deeprnn::LSTM make_lstm(torch::ScalarType dtype) {
  deeprnn::LSTM lstm(deeprnn::LSTMOptions(kInput, kHidden)
                         .num_layers(kLayers)
                         .bidirectional(true));
  lstm->to(dtype);
  return lstm;
}

Forward lstm_forward(const deeprnn::LSTM& module) {
  // The shared_ptr, not the holder: a holder's operator-> in a const lambda
  // gives a const module, and forward is not const.
  return [lstm = module.ptr()](
             const Tensor& x, const Tensor& h0, const Tensor& c0) {
    auto [output, state] = lstm->forward(x, std::make_tuple(h0, c0));
    return std::vector<Tensor>{output, std::get<0>(state), std::get<1>(state)};
  };
}

TEST_F(Threads, SharedLSTMForwardFloat32) {
  torch::manual_seed(1);
  deeprnn::LSTM lstm = make_lstm(torch::kFloat);
  expect_concurrent_equals_serial(
      "LSTM float32 forward",
      lstm_forward(lstm),
      parameters_of(lstm),
      /*with_c0=*/true,
      torch::kFloat,
      /*with_backward=*/false);
}

TEST_F(Threads, SharedLSTMForwardBackwardFloat32) {
  torch::manual_seed(2);
  deeprnn::LSTM lstm = make_lstm(torch::kFloat);
  expect_concurrent_equals_serial(
      "LSTM float32 forward+backward",
      lstm_forward(lstm),
      parameters_of(lstm),
      /*with_c0=*/true,
      torch::kFloat,
      /*with_backward=*/true);
}

TEST_F(Threads, SharedLSTMForwardBackwardFloat64) {
  torch::manual_seed(3);
  deeprnn::LSTM lstm = make_lstm(torch::kDouble);
  expect_concurrent_equals_serial(
      "LSTM float64 forward+backward",
      lstm_forward(lstm),
      parameters_of(lstm),
      /*with_c0=*/true,
      torch::kDouble,
      /*with_backward=*/true);
}

TEST_F(Threads, SharedGRUForwardBackwardFloat32) {
  torch::manual_seed(4);
  deeprnn::GRU gru(deeprnn::GRUOptions(kInput, kHidden)
                       .num_layers(kLayers)
                       .bidirectional(true));
  expect_concurrent_equals_serial(
      "GRU float32 forward+backward",
      [gru = gru.ptr()](const Tensor& x, const Tensor& h0, const Tensor&) {
        auto [output, hy] = gru->forward(x, h0);
        return std::vector<Tensor>{output, hy};
      },
      parameters_of(gru),
      /*with_c0=*/false,
      torch::kFloat,
      /*with_backward=*/true);
}

TEST_F(Threads, SharedRNNForwardBackwardFloat32) {
  torch::manual_seed(5);
  deeprnn::RNN rnn(deeprnn::RNNOptions(kInput, kHidden)
                       .num_layers(kLayers)
                       .bidirectional(true)
                       .nonlinearity(torch::kTanh));
  expect_concurrent_equals_serial(
      "RNN(tanh) float32 forward+backward",
      [rnn = rnn.ptr()](const Tensor& x, const Tensor& h0, const Tensor&) {
        auto [output, hy] = rnn->forward(x, h0);
        return std::vector<Tensor>{output, hy};
      },
      parameters_of(rnn),
      /*with_c0=*/false,
      torch::kFloat,
      /*with_backward=*/true);
}

} // namespace
