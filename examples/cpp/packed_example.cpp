// Variable-length batches with deeprnn::LSTM: a PackedSequence, exactly as
// torch::nn::LSTM::forward_with_packed_input takes it, or the padded batch
// with its lengths and no packing at all. Both match torch::nn::LSTM.
#include <deeprnn/deeprnn.h>
#include <torch/torch.h>

#include <iostream>

namespace rnn_utils = torch::nn::utils::rnn;

int main() {
  torch::manual_seed(0);
  auto options = deeprnn::LSTMOptions(10, 20).num_layers(2).bidirectional(true);
  deeprnn::LSTM lstm(options);
  torch::nn::LSTM reference(
      torch::nn::LSTMOptions(10, 20).num_layers(2).bidirectional(true));
  {
    torch::NoGradGuard no_grad;
    auto parameters = lstm->named_parameters();
    for (const auto& item : reference->named_parameters()) {
      parameters[item.key()].copy_(item.value());
    }
  }

  // Three sequences of 4, 6 and 2 steps, padded to 6, in any order.
  auto padded = torch::randn({6, 3, 10}); // (seq_len, batch, input_size)
  auto lengths = torch::tensor({4, 6, 2}, torch::kLong);

  // 1. PackedSequence in, PackedSequence out, as with torch::nn.
  auto packed = rnn_utils::pack_padded_sequence(
      padded, lengths, /*batch_first=*/false, /*enforce_sorted=*/false);
  auto [packed_output, state] = lstm->forward_with_packed_input(packed);
  auto [h_n, c_n] = state; // (4, 3, 20), in the order of `lengths`
  auto [output, output_lengths] = rnn_utils::pad_packed_sequence(packed_output);

  // 2. No packing: the padded batch and its lengths. Outputs past each
  // sequence's end are zero; h_n/c_n hold each sequence's last valid step.
  auto [direct_output, direct_state] = lstm->forward(padded, {}, lengths);

  auto [ref_packed, ref_state] = reference->forward_with_packed_input(packed);
  auto ref_output = std::get<0>(rnn_utils::pad_packed_sequence(ref_packed));
  auto close = [](const torch::Tensor& a, const torch::Tensor& b) {
    return torch::allclose(a, b, /*rtol=*/1e-4, /*atol=*/1e-5);
  };
  const bool same = close(output, ref_output) &&
      close(h_n, std::get<0>(ref_state)) &&
      close(c_n, std::get<1>(ref_state)) && close(direct_output, ref_output) &&
      close(std::get<0>(direct_state), std::get<0>(ref_state));

  std::cout << "output " << output.sizes() << ", lengths "
            << output_lengths.sizes() << "\n"; // [6, 3, 40], [3]
  std::cout << "h_n " << h_n.sizes() << " c_n " << c_n.sizes() << "\n";
  std::cout << (same ? "packed and padded forms match torch::nn::LSTM"
                     : "MISMATCH against torch::nn::LSTM")
            << std::endl;
  return same ? 0 : 1;
}
