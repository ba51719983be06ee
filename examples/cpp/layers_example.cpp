// A deep RNN whose layers differ in size ("Layer 1 might have 3 units and
// Layer 2 might have 2 units"), as one deeprnn module; then a bidirectional
// stack whose two directions are summed and which returns only each
// sequence's last step.
#include <deeprnn/deeprnn.h>
#include <torch/torch.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  auto x = torch::randn({7, 4, 3}); // (seq_len, batch, input_size)

  // 1. Two stacked LSTM layers of 3 then 2 units. Their states differ in
  // size, so forward_layers gives them one tensor per layer.
  deeprnn::LSTM lstm(
      deeprnn::LSTMOptions(3, 3).num_layers(2).hidden_sizes({3, 2}));
  auto [output, state] = lstm->forward_layers(x);
  auto [h_n, c_n] = state;
  std::cout << "output " << output.sizes() << "\n"; // [7, 4, 2]
  for (size_t layer = 0; layer < h_n.size(); ++layer) {
    std::cout << "layer " << layer << ": h_n " << h_n[layer].sizes() << ", c_n "
              << c_n[layer].sizes() << "\n"; // [1, 4, 3], [1, 4, 2]
  }
  // Layer 1 reads layer 0's 3 features: 4 gates x 2 units by 3.
  std::cout << "weight_ih_l1 "
            << lstm->named_parameters()["weight_ih_l1"].sizes()
            << "\n"; // [8, 3]

  // 2. Bidirectional GRU layers of 3 then 2 units, the two directions
  // summed (before layer 1 reads them, and in the output), last step only.
  // With lengths, that is each sequence's own last step.
  deeprnn::GRU encoder(deeprnn::GRUOptions(3, 3)
                           .num_layers(2)
                           .hidden_sizes({3, 2})
                           .bidirectional(true)
                           .merge_mode(deeprnn::MergeMode::kSum)
                           .return_sequences(false));
  auto lengths = torch::tensor({7, 5, 2, 6}, torch::kLong);
  auto [last, h_layers] = encoder->forward_layers(x, {}, lengths);
  std::cout << "last " << last.sizes() << "\n"; // [4, 2]: (batch, 2 units)

  // The forward direction's state at each sequence's last step plus the
  // reverse direction's after reading the whole sequence.
  const bool same = torch::allclose(last, h_layers[1][0] + h_layers[1][1]);
  std::cout << (same ? "last step = summed final states of the top layer"
                     : "MISMATCH")
            << std::endl;
  return same ? 0 : 1;
}
