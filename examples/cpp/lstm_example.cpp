// deeprnn::LSTM as a drop-in for torch::nn::LSTM: same options, same
// parameter names, same outputs and gradients.
#include <deeprnn/deeprnn.h>
#include <torch/torch.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  deeprnn::LSTM lstm(
      deeprnn::LSTMOptions(10, 20).num_layers(2).bidirectional(true));
  torch::nn::LSTM reference(
      torch::nn::LSTMOptions(10, 20).num_layers(2).bidirectional(true));
  {
    torch::NoGradGuard no_grad;
    auto parameters = lstm->named_parameters();
    for (const auto& item : reference->named_parameters()) {
      parameters[item.key()].copy_(item.value());
    }
  }

  auto x = torch::randn({5, 3, 10}); // (seq_len, batch, input_size)
  auto x_ours = x.clone().requires_grad_();
  auto x_ref = x.clone().requires_grad_();
  auto [output, state] = lstm->forward(x_ours);
  auto [h_n, c_n] = state;
  auto [ref_output, ref_state] = reference->forward(x_ref);
  auto [ref_h_n, ref_c_n] = ref_state;
  (output.pow(2).sum() + h_n.sum() + c_n.sum()).backward();
  (ref_output.pow(2).sum() + ref_h_n.sum() + ref_c_n.sum()).backward();

  auto close = [](const torch::Tensor& a, const torch::Tensor& b) {
    return torch::allclose(a, b, /*rtol=*/1e-4, /*atol=*/1e-5);
  };
  bool same = close(output, ref_output) && close(h_n, ref_h_n) &&
      close(c_n, ref_c_n) && close(x_ours.grad(), x_ref.grad());
  auto ref_parameters = reference->named_parameters();
  for (const auto& item : lstm->named_parameters()) {
    same =
        same && close(item.value().grad(), ref_parameters[item.key()].grad());
  }

  std::cout << "output " << output.sizes() << "\n"; // [5, 3, 40]
  std::cout << "h_n " << h_n.sizes() << " c_n " << c_n.sizes() << "\n";
  std::cout << (same ? "outputs and gradients match torch::nn::LSTM"
                     : "MISMATCH against torch::nn::LSTM")
            << std::endl;
  return same ? 0 : 1;
}
