// deeprnn on CUDA from C++: the modules (moved with ->to(torch::kCUDA)) and
// the functional API give on a GPU what they give on the CPU, in float64,
// forward and every gradient, with and without lengths (on the CPU and on
// the GPU). Skipped, with the reason, where CUDA is absent or this build has
// no CUDA kernels; scripts/gpu_check.sh runs them on a GPU machine. The
// Python tests (tests/python/test_cuda.py) hold the full matrix against
// cuDNN; these check the C++ entry points.

#include <deeprnn/deeprnn.h>

#include "test_helpers.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

namespace {

using deeprnn_test::fresh_leaf;
using deeprnn_test::tensors_close;
using torch::Tensor;

std::string cuda_skip_reason() {
  if (!torch::cuda::is_available()) {
    return "CUDA is not available (torch::cuda::is_available() is false)";
  }
  const auto op =
      c10::Dispatcher::singleton().findSchema({"deeprnn::_rnn_forward", ""});
  if (!op.has_value() || !op->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) {
    return "this deeprnn build has no CUDA kernels";
  }
  return "";
}

#define DEEPRNN_SKIP_WITHOUT_CUDA()                \
  do {                                             \
    const std::string reason = cuda_skip_reason(); \
    if (!reason.empty()) {                         \
      GTEST_SKIP() << reason;                      \
    }                                              \
  } while (0)

constexpr int64_t kSeqLen = 6, kBatch = 5, kInput = 7, kHidden = 10;

// Unsorted, holding T and 1.
Tensor test_lengths() {
  return torch::tensor(std::vector<int64_t>{3, kSeqLen, 1, 5, 2}, torch::kLong);
}

// Runs the module on (x, h0[, c0], lengths); returns the results and the
// gradients of a random weighted sum of them with respect to the input, the
// initial states and every parameter (in named_parameters order), all moved
// to the CPU.
template <typename Module, typename Run>
std::vector<Tensor> results_and_grads(
    Module& module,
    const std::vector<Tensor>& inputs,
    const std::vector<Tensor>& upstream,
    const Run& run) {
  std::vector<Tensor> leaves;
  for (const auto& t : inputs) {
    leaves.push_back(fresh_leaf(t));
  }
  std::vector<Tensor> results = run(module, leaves);
  Tensor loss = torch::zeros({}, results[0].options());
  for (size_t i = 0; i < results.size(); ++i) {
    loss = loss + (results[i] * upstream[i].to(results[i].device())).sum();
  }
  std::vector<Tensor> wrt = leaves;
  for (const auto& p : module->parameters()) {
    wrt.push_back(p);
  }
  std::vector<Tensor> all = results;
  for (const auto& g : torch::autograd::grad({loss}, wrt)) {
    all.push_back(g);
  }
  for (auto& t : all) {
    t = t.detach().cpu();
  }
  return all;
}

template <typename Module, typename Run>
void expect_cuda_matches_cpu(
    Module cpu_module,
    const std::vector<Tensor>& inputs,
    const Run& run) {
  auto gpu_module = std::dynamic_pointer_cast<typename Module::ContainedType>(
      cpu_module->clone());
  ASSERT_TRUE(gpu_module);
  gpu_module->to(torch::kCUDA);
  Module gpu(gpu_module);
  std::vector<Tensor> gpu_inputs;
  for (const auto& t : inputs) {
    gpu_inputs.push_back(t.cuda());
  }
  // Upstream gradients shaped like the results: one forward tells them.
  std::vector<Tensor> upstream;
  {
    torch::NoGradGuard no_grad;
    for (const auto& r : run(cpu_module, inputs)) {
      upstream.push_back(torch::randn_like(r));
    }
  }
  const auto expected = results_and_grads(cpu_module, inputs, upstream, run);
  const auto got = results_and_grads(gpu, gpu_inputs, upstream, run);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(tensors_close(got[i], expected[i])) << "result/gradient " << i;
  }
}

TEST(CudaModules, LSTMWithProjectionMatchesCpu) {
  DEEPRNN_SKIP_WITHOUT_CUDA();
  torch::manual_seed(11);
  deeprnn::LSTM lstm(deeprnn::LSTMOptions(kInput, kHidden)
                         .num_layers(2)
                         .bidirectional(true)
                         .proj_size(4));
  lstm->to(torch::kDouble);
  const auto options = torch::dtype(torch::kDouble);
  const std::vector<Tensor> inputs = {
      torch::randn({kSeqLen, kBatch, kInput}, options),
      torch::randn({4, kBatch, 4}, options),
      torch::randn({4, kBatch, kHidden}, options)};
  for (const Tensor& lengths : {Tensor(), test_lengths()}) {
    SCOPED_TRACE(lengths.defined() ? "with lengths" : "full length");
    expect_cuda_matches_cpu(
        lstm, inputs, [&](deeprnn::LSTM& m, const std::vector<Tensor>& in) {
          // lengths stay on the CPU: the operator takes them there for
          // CUDA input without a device synchronisation.
          auto [output, state] =
              m->forward(in[0], std::make_tuple(in[1], in[2]), lengths);
          return std::vector<Tensor>{
              output, std::get<0>(state), std::get<1>(state)};
        });
  }
}

TEST(CudaModules, GRUAndRNNMatchCpuBatchFirst) {
  DEEPRNN_SKIP_WITHOUT_CUDA();
  torch::manual_seed(12);
  const auto options = torch::dtype(torch::kDouble);
  const std::vector<Tensor> inputs = {
      torch::randn({kBatch, kSeqLen, kInput}, options),
      torch::randn({4, kBatch, kHidden}, options)};
  deeprnn::GRU gru(deeprnn::GRUOptions(kInput, kHidden)
                       .num_layers(2)
                       .bidirectional(true)
                       .batch_first(true));
  gru->to(torch::kDouble);
  deeprnn::RNN rnn(deeprnn::RNNOptions(kInput, kHidden)
                       .num_layers(2)
                       .bidirectional(true)
                       .batch_first(true)
                       .nonlinearity(torch::kReLU)
                       .bias(false));
  rnn->to(torch::kDouble);
  for (const Tensor& lengths : {Tensor(), test_lengths()}) {
    SCOPED_TRACE(lengths.defined() ? "with lengths" : "full length");
    expect_cuda_matches_cpu(
        gru, inputs, [&](deeprnn::GRU& m, const std::vector<Tensor>& in) {
          auto [output, hy] = m->forward(in[0], in[1], lengths);
          return std::vector<Tensor>{output, hy};
        });
    expect_cuda_matches_cpu(
        rnn, inputs, [&](deeprnn::RNN& m, const std::vector<Tensor>& in) {
          auto [output, hy] = m->forward(in[0], in[1], lengths);
          return std::vector<Tensor>{output, hy};
        });
  }
}

TEST(CudaFunctional, LengthsOnTheGpuAsOnTheCpu) {
  DEEPRNN_SKIP_WITHOUT_CUDA();
  torch::manual_seed(13);
  const auto options = torch::dtype(torch::kDouble).device(torch::kCUDA);
  torch::nn::RNN reference(
      torch::nn::RNNOptions(kInput, kHidden).num_layers(2).bidirectional(true));
  reference->to(torch::kDouble);
  reference->to(torch::kCUDA);
  std::vector<Tensor> params = reference->all_weights();
  const Tensor x = torch::randn({kSeqLen, kBatch, kInput}, options);
  const Tensor h0 = torch::randn({4, kBatch, kHidden}, options);
  const Tensor lengths = test_lengths();
  auto [output, hy] = deeprnn::rnn_tanh(
      x, h0, params, true, 2, 0.0, true, true, false, lengths);
  auto [output_gpu_lengths, hy_gpu_lengths] = deeprnn::rnn_tanh(
      x, h0, params, true, 2, 0.0, true, true, false, lengths.cuda());
  ASSERT_TRUE(output.is_cuda());
  EXPECT_TRUE(tensors_close(output_gpu_lengths.cpu(), output.cpu()));
  EXPECT_TRUE(tensors_close(hy_gpu_lengths.cpu(), hy.cpu()));
  // Past each length the output is exactly zero.
  const Tensor padding =
      torch::arange(kSeqLen).unsqueeze(1) >= lengths.unsqueeze(0); // (T, B)
  EXPECT_EQ(output.cpu().index({padding}).abs().max().item<double>(), 0.0);
}

} // namespace
