// A short forward and backward of each deeprnn module on CPU, small enough
// to run under valgrind (scripts/valgrind.sh) in about a minute: stacked,
// bidirectional, with dropout in training and with initial states, in float32
// (the MKL packed-GEMM path and the vectorised activations) and float64, plus
// an inference forward (its chunked input projection is a path of its own),
// each also with variable lengths in unsorted order (the batch reordering,
// shrinking steps, reverse-direction starts and zeroed padding).
// So every kernel and the reserve (gates, cells, outputs, masks) is written
// and read once. Exits non-zero if a result is not finite, so a run that
// valgrind lets pass but computes garbage still fails.

#include <deeprnn/deeprnn.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <tuple>

namespace {

constexpr int64_t kSeqLen = 5, kBatch = 3, kInput = 4, kHidden = 6;
constexpr int64_t kLayers = 2, kDirections = 2;

torch::Tensor lengths() {
  return torch::tensor({4, 5, 2}, torch::kLong); // kBatch, unsorted
}

bool all_finite(const std::string& what, const torch::Tensor& tensor) {
  if (!tensor.defined() || !tensor.isfinite().all().item<bool>()) {
    std::fprintf(
        stderr,
        "forward_backward: %s is undefined or not finite\n",
        what.c_str());
    return false;
  }
  return true;
}

// Runs `forward` (output, hy[, cy] all feed the loss) for training, then
// backward, and checks the input, h0 and every parameter received a finite
// gradient; then the same forward in inference.
template <typename Module, typename Forward>
bool forward_backward(
    const std::string& name,
    Module& module,
    torch::ScalarType dtype,
    Forward forward) {
  const std::string what = name + " " + c10::toString(dtype);
  module->to(dtype);
  module->zero_grad();
  module->train();
  const auto options = torch::TensorOptions().dtype(dtype);
  auto x = torch::randn({kSeqLen, kBatch, kInput}, options).requires_grad_();
  auto h0 = torch::randn({kLayers * kDirections, kBatch, kHidden}, options)
                .requires_grad_();
  torch::Tensor loss = forward(x, h0);
  loss.backward();
  bool ok = all_finite(what + " loss", loss) &&
      all_finite(what + " input grad", x.grad()) &&
      all_finite(what + " h0 grad", h0.grad());
  for (const auto& item : module->named_parameters()) {
    ok = all_finite(what + " grad of " + item.key(), item.value().grad()) && ok;
  }
  module->eval();
  torch::NoGradGuard no_grad;
  return all_finite(what + " inference", forward(x, h0)) && ok;
}

} // namespace

int main() {
  torch::manual_seed(0);
  bool ok = true;

  deeprnn::LSTM lstm(deeprnn::LSTMOptions(kInput, kHidden)
                         .num_layers(kLayers)
                         .bidirectional(true)
                         .dropout(0.3));
  deeprnn::GRU gru(deeprnn::GRUOptions(kInput, kHidden)
                       .num_layers(kLayers)
                       .bidirectional(true)
                       .dropout(0.3));
  deeprnn::RNN rnn(deeprnn::RNNOptions(kInput, kHidden)
                       .num_layers(kLayers)
                       .bidirectional(true)
                       .dropout(0.3)
                       .nonlinearity(torch::kReLU));
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    ok = forward_backward(
             "LSTM",
             lstm,
             dtype,
             [&](const torch::Tensor& x, const torch::Tensor& h0) {
               auto c0 = torch::randn_like(h0);
               auto [output, state] = lstm->forward(x, std::make_tuple(h0, c0));
               auto [hy, cy] = state;
               auto [output_l, state_l] =
                   lstm->forward(x, std::make_tuple(h0, c0), lengths());
               return output.pow(2).sum() + hy.sum() + cy.sum() +
                   output_l.pow(2).sum() + std::get<0>(state_l).sum() +
                   std::get<1>(state_l).sum();
             }) &&
        ok;
    ok = forward_backward(
             "GRU",
             gru,
             dtype,
             [&](const torch::Tensor& x, const torch::Tensor& h0) {
               auto [output, hy] = gru->forward(x, h0);
               auto [output_l, hy_l] = gru->forward(x, h0, lengths());
               return output.pow(2).sum() + hy.sum() + output_l.pow(2).sum() +
                   hy_l.sum();
             }) &&
        ok;
    ok = forward_backward(
             "RNN",
             rnn,
             dtype,
             [&](const torch::Tensor& x, const torch::Tensor& h0) {
               auto [output, hy] = rnn->forward(x, h0);
               auto [output_l, hy_l] = rnn->forward(x, h0, lengths());
               return output.pow(2).sum() + hy.sum() + output_l.pow(2).sum() +
                   hy_l.sum();
             }) &&
        ok;
  }

  std::printf("forward_backward: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
