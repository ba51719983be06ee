// Autocast kernels of the public operators (AutocastCPU and AutocastCUDA).
//
// Under torch.autocast the operators run in the autocast dtype (bfloat16 or
// float16): input, hx, cx and every parameter are cast with
// at::autocast::cached_cast (float64 tensors are left alone, as autocast
// does everywhere), then the op is called again below the autocast key. The
// kernels accumulate half types in float. The casts are differentiable, so
// gradients reach float32 parameters in float32, and cached_cast reuses the
// cast of a parameter across the calls of one autocast region.
//
// The results have the dtypes torch.nn's RNNs return under autocast, so
// that deeprnn's modules stay drop-ins there. aten::lstm/gru/rnn_* have no
// autocast policy of their own; the dtypes come from what they call:
// - a fused operator that autocast casts as a whole (lower_precision_fp), so
//   every result is low precision: cuDNN's _cudnn_rnn on CUDA, and on CPU
//   oneDNN's mkldnn_rnn_layer (LSTM without projection only);
// - otherwise ATen's cell-by-cell path, where only the matrix products are
//   low precision and the pointwise updates promote with the previous state
//   (see carried_dtype).

#include "common/config.h"

#include <deeprnn/ops.h>

#include <ATen/Config.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/ops/cudnn_is_acceptable.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace deeprnn {
namespace {

using at::Tensor;

// Whether torch.nn runs this call as one fused operator, following the
// choice in ATen's RNN.cpp for the input autocast leaves untouched there.
// A low-precision input takes the cell-by-cell rule below, which gives the
// same dtypes unless a given state is wider than the input. With lengths,
// the counterpart is torch.nn on a PackedSequence, which oneDNN does not
// take.
bool torch_fuses(
    c10::DeviceType device_type,
    Mode mode,
    bool has_proj,
    const Tensor& input,
    const std::optional<Tensor>& lengths) {
  if (device_type == c10::DeviceType::CUDA) {
    return at::cudnn_is_acceptable(input);
  }
  const bool packed = lengths.has_value() && lengths->defined();
#if AT_MKLDNN_ENABLED()
  return mode == Mode::LSTM && !has_proj && !packed &&
      at::globalContext().userEnabledMkldnn() &&
      input.scalar_type() == at::kFloat && input.numel() != 0;
#else
  (void)mode;
  (void)has_proj;
  (void)input;
  (void)packed;
  return false;
#endif
}

// The dtype of a state that torch.nn's cell-by-cell path updates from
// itself: GRU's h' = (1 - z) * n + z * h and LSTM's c' = f * c + i * g mix
// the low-precision gates with the previous state, so type promotion keeps
// the state's dtype (zeros of the input's dtype when it is not given). An
// RNN's h' = tanh(W_ih x + W_hh h) and a projected LSTM's h' = W_hr m are
// products, hence low precision.
at::ScalarType carried_dtype(
    at::ScalarType low_precision,
    const std::optional<Tensor>& state,
    const Tensor& input) {
  const bool given = state.has_value() && state->defined();
  return at::promote_types(
      low_precision, given ? state->scalar_type() : input.scalar_type());
}

template <c10::DeviceType kDeviceType>
std::tuple<Tensor, Tensor, Tensor> lstm_autocast(
    const Tensor& input,
    const std::optional<Tensor>& hx,
    const std::optional<Tensor>& cx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    const std::optional<Tensor>& lengths) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(kDeviceType));
  const auto low_precision = at::autocast::get_autocast_dtype(kDeviceType);
  const auto cast_input =
      at::autocast::cached_cast(low_precision, input, kDeviceType);
  auto [output, hy, cy] = lstm(
      cast_input,
      at::autocast::cached_cast(low_precision, hx, kDeviceType),
      at::autocast::cached_cast(low_precision, cx, kDeviceType),
      at::autocast::cached_cast(low_precision, params, kDeviceType),
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
  // A projection adds w_hr to each (layer, direction); the count is checked
  // by the op above, which has already failed if it is wrong.
  const int64_t per_direction = (has_biases ? 4 : 2) + 1;
  const bool has_proj = static_cast<int64_t>(params.size()) ==
      num_layers * (bidirectional ? 2 : 1) * per_direction;
  if (cast_input.scalar_type() != low_precision ||
      torch_fuses(kDeviceType, Mode::LSTM, has_proj, input, lengths)) {
    return {output, hy, cy};
  }
  const auto cell_dtype = carried_dtype(low_precision, cx, input);
  // Without projection h' = o * tanh(c') takes c's dtype.
  const auto hidden_dtype = has_proj ? low_precision : cell_dtype;
  return {output.to(hidden_dtype), hy.to(hidden_dtype), cy.to(cell_dtype)};
}

using SimpleOp = std::tuple<Tensor, Tensor> (*)(
    const Tensor&,
    const std::optional<Tensor>&,
    at::TensorList,
    bool,
    int64_t,
    double,
    bool,
    bool,
    bool,
    const std::optional<Tensor>&);

constexpr SimpleOp simple_op(Mode mode) {
  return mode == Mode::GRU     ? &gru
      : mode == Mode::RNN_TANH ? &rnn_tanh
                               : &rnn_relu;
}

// GRU, RNN_TANH, RNN_RELU.
template <Mode kMode, c10::DeviceType kDeviceType>
std::tuple<Tensor, Tensor> simple_autocast(
    const Tensor& input,
    const std::optional<Tensor>& hx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    const std::optional<Tensor>& lengths) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(kDeviceType));
  const auto low_precision = at::autocast::get_autocast_dtype(kDeviceType);
  const auto cast_input =
      at::autocast::cached_cast(low_precision, input, kDeviceType);
  auto [output, hy] = simple_op(kMode)(
      cast_input,
      at::autocast::cached_cast(low_precision, hx, kDeviceType),
      at::autocast::cached_cast(low_precision, params, kDeviceType),
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
  if (kMode != Mode::GRU || cast_input.scalar_type() != low_precision ||
      torch_fuses(kDeviceType, kMode, /*has_proj=*/false, input, lengths)) {
    return {output, hy};
  }
  const auto hidden_dtype = carried_dtype(low_precision, hx, input);
  return {output.to(hidden_dtype), hy.to(hidden_dtype)};
}

} // namespace

TORCH_LIBRARY_IMPL(deeprnn, AutocastCPU, m) {
  constexpr auto kCPU = c10::DeviceType::CPU;
  m.impl("lstm", &lstm_autocast<kCPU>);
  m.impl("gru", &simple_autocast<Mode::GRU, kCPU>);
  m.impl("rnn_tanh", &simple_autocast<Mode::RNN_TANH, kCPU>);
  m.impl("rnn_relu", &simple_autocast<Mode::RNN_RELU, kCPU>);
}

// Registered in every build (the key exists in CPU-only torch too); it runs
// only for CUDA tensors under torch.autocast("cuda").
TORCH_LIBRARY_IMPL(deeprnn, AutocastCUDA, m) {
  constexpr auto kCUDA = c10::DeviceType::CUDA;
  m.impl("lstm", &lstm_autocast<kCUDA>);
  m.impl("gru", &simple_autocast<Mode::GRU, kCUDA>);
  m.impl("rnn_tanh", &simple_autocast<Mode::RNN_TANH, kCUDA>);
  m.impl("rnn_relu", &simple_autocast<Mode::RNN_RELU, kCUDA>);
}

} // namespace deeprnn
