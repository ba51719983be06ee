#pragma once

// Functional API of deeprnn: thin wrappers that call the operators through
// the PyTorch dispatcher, so device, autocast and autograd dispatch apply.
//
// Shapes (T steps, B batch, I input size, H hidden, P = proj_size or H,
// D = 2 if bidirectional else 1, L = num_layers):
//   input  (T, B, I), or (B, T, I) with batch_first
//   hx     (L*D, B, P), cx (L*D, B, H); row l*D + d, forward before reverse;
//          absent (nullopt) means zeros
//   output (T, B, D*P), or (B, T, D*P) with batch_first
//   params per layer, per direction: w_ih (G*H, I_l), w_hh (G*H, P),
//          [b_ih (G*H), b_hh (G*H)], [w_hr (P, H)]; exactly
//          torch.nn.LSTM._flat_weights. G = 4 (LSTM), 3 (GRU), 1 (RNN).
//   lengths (B) int64, optional: sequence b has lengths[b] valid steps
//          (1..T, any order; no sorting needed). Past its end a sequence's
//          state stays unchanged and its output is zero; hy/cy hold the
//          state at its last valid step; the reverse direction starts at
//          its last valid step; padded input is ignored (zero gradient).
//          This is torch.nn's PackedSequence without the packing. lengths
//          may live on the CPU or on the input's device; on the CPU the
//          kernels read it without a device synchronisation.

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>
#include <deeprnn/export.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

namespace deeprnn {

// Returns (output, hy, cy).
DEEPRNN_API std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm(
    const at::Tensor& input,
    const std::optional<at::Tensor>& hx,
    const std::optional<at::Tensor>& cx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    const std::optional<at::Tensor>& lengths = std::nullopt);

// Returns (output, hy).
DEEPRNN_API std::tuple<at::Tensor, at::Tensor> gru(
    const at::Tensor& input,
    const std::optional<at::Tensor>& hx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    const std::optional<at::Tensor>& lengths = std::nullopt);

DEEPRNN_API std::tuple<at::Tensor, at::Tensor> rnn_tanh(
    const at::Tensor& input,
    const std::optional<at::Tensor>& hx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    const std::optional<at::Tensor>& lengths = std::nullopt);

DEEPRNN_API std::tuple<at::Tensor, at::Tensor> rnn_relu(
    const at::Tensor& input,
    const std::optional<at::Tensor>& hx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    const std::optional<at::Tensor>& lengths = std::nullopt);

// Number of elements (of the input's dtype) of the reserve that a training
// forward keeps for backward. mode is "lstm", "gru", "rnn_tanh" or
// "rnn_relu"; proj_size 0 means no projection; with_dropout says whether
// dropout masks are kept (train and dropout > 0 and num_layers > 1).
DEEPRNN_API int64_t reserve_size(
    c10::string_view mode,
    int64_t seq_len,
    int64_t batch,
    int64_t input_size,
    int64_t hidden_size,
    int64_t proj_size,
    int64_t num_layers,
    bool bidirectional,
    bool with_dropout);

namespace detail {
// Defined in libdeeprnn; referenced from <deeprnn/deeprnn.h> so that a
// program including it always links the library, and with it the operator
// registrations (which the linker would otherwise drop as unused).
DEEPRNN_API int64_t link_anchor();
} // namespace detail

} // namespace deeprnn
