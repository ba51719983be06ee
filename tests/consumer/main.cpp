// Uses an installed deeprnn the way a program that only loads models would:
// it reaches deeprnn::lstm through the dispatcher alone, so nothing but the
// link anchor of <deeprnn/deeprnn.h> keeps libdeeprnn in the link. The
// result is checked against ATen's own LSTM (at::lstm) with the same
// weights; exits nonzero on any mismatch.
#include <deeprnn/deeprnn.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>
#include <tuple>
#include <vector>

int main() {
  try {
    at::manual_seed(0);
    const int64_t seq_len = 7, batch = 3, input_size = 5, hidden = 4;
    const int64_t num_layers = 2, directions = 2;
    const auto options = at::TensorOptions().dtype(at::kDouble);

    // torch.nn's initialisation, U(-1/sqrt(hidden), 1/sqrt(hidden)): weights
    // that leave the gates unsaturated, where errors show.
    const auto weight = [&](at::IntArrayRef shape) {
      return (at::rand(shape, options) * 2 - 1) / std::sqrt(double(hidden));
    };
    // torch.nn.LSTM's flat weights: per layer, per direction w_ih, w_hh,
    // b_ih, b_hh.
    std::vector<at::Tensor> params;
    for (int64_t layer = 0; layer < num_layers; ++layer) {
      const int64_t layer_input = layer == 0 ? input_size : directions * hidden;
      for (int64_t direction = 0; direction < directions; ++direction) {
        params.push_back(weight({4 * hidden, layer_input}));
        params.push_back(weight({4 * hidden, hidden}));
        params.push_back(weight({4 * hidden}));
        params.push_back(weight({4 * hidden}));
      }
    }
    const auto input = at::randn({seq_len, batch, input_size}, options);
    const auto h0 =
        at::randn({num_layers * directions, batch, hidden}, options);
    const auto c0 =
        at::randn({num_layers * directions, batch, hidden}, options);

    auto lstm = c10::Dispatcher::singleton()
                    .findSchemaOrThrow("deeprnn::lstm", "")
                    .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                        const at::Tensor&,
                        const std::optional<at::Tensor>&,
                        const std::optional<at::Tensor>&,
                        at::TensorList,
                        bool,
                        int64_t,
                        double,
                        bool,
                        bool,
                        bool,
                        const std::optional<at::Tensor>&)>();
    const auto [output, hy, cy] = lstm.call(
        input,
        h0,
        c0,
        params,
        /*has_biases=*/true,
        num_layers,
        /*dropout=*/0.0,
        /*train=*/false,
        /*bidirectional=*/true,
        /*batch_first=*/false,
        /*lengths=*/std::nullopt);
    const auto [ref_output, ref_hy, ref_cy] = at::lstm(
        input,
        {h0, c0},
        params,
        /*has_biases=*/true,
        num_layers,
        /*dropout=*/0.0,
        /*train=*/false,
        /*bidirectional=*/true,
        /*batch_first=*/false);

    const double error = std::max(
        {(output - ref_output).abs().max().item<double>(),
         (hy - ref_hy).abs().max().item<double>(),
         (cy - ref_cy).abs().max().item<double>()});
    const bool same_shapes = output.sizes() == ref_output.sizes() &&
        hy.sizes() == ref_hy.sizes() && cy.sizes() == ref_cy.sizes();
    std::cout << "deeprnn::lstm output " << output.sizes() << ", max |error| "
              << error << " against at::lstm\n";
    if (!same_shapes || !(error < 1e-12)) {
      std::cout << "MISMATCH\n";
      return 1;
    }
    std::cout << "OK\n";
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "consumer: " << error.what() << "\n";
    return 1;
  }
}
