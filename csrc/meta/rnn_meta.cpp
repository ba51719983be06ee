// Meta (shape-only) kernels: the same checks as the real kernels, and
// outputs with the sizes and strides the CPU and CUDA kernels produce, so
// that fake tensors (torch.compile, torch.export) see exactly what runs.
// Sizes stay symbolic: T and B may be dynamic without a recompile per value.

#include "common/config.h"

#include <ATen/ATen.h>
#include <torch/library.h>

namespace deeprnn {
namespace {

using at::Tensor;

// [T, B, W] time-major, seen as (B, T, W) with batch_first.
Tensor sequence_like(
    const SymbolicRNNConfig& sym,
    int64_t width,
    const at::TensorOptions& opts) {
  Tensor t = at::empty_symint({sym.seq_len, sym.batch, width}, opts);
  return sym.cfg.batch_first ? t.transpose(0, 1) : t;
}

// [L*D, B, W]
Tensor state_like(
    const SymbolicRNNConfig& sym,
    int64_t width,
    const at::TensorOptions& opts) {
  const int64_t LD = sym.cfg.num_layers * sym.cfg.num_directions;
  return at::empty_symint({LD, sym.batch, width}, opts);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> rnn_forward_meta(
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
    c10::string_view mode,
    bool need_reserve,
    const std::optional<Tensor>& lengths) {
  const SymbolicRNNConfig sym = check_rnn_args_symbolic(
      parse_mode(mode),
      input,
      hx,
      cx,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
  const RNNConfig& cfg = sym.cfg;
  const auto opts = input.options();
  const c10::SymInt reserve = need_reserve ? reserve_numel(sym) : 0;
  return {
      sequence_like(sym, cfg.num_directions * cfg.proj_size, opts),
      state_like(sym, cfg.proj_size, opts),
      cfg.mode == Mode::LSTM ? state_like(sym, cfg.hidden_size, opts)
                             : at::empty({0}, opts),
      at::empty_symint({reserve}, opts)};
}

std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> rnn_backward_meta(
    const Tensor& input,
    const std::optional<Tensor>& hx,
    const std::optional<Tensor>& cx,
    at::TensorList params,
    const Tensor& output,
    const Tensor& reserve,
    const std::optional<Tensor>& grad_output,
    const std::optional<Tensor>& grad_hy,
    const std::optional<Tensor>& grad_cy,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    c10::string_view mode,
    std::array<bool, 4> output_mask,
    const std::optional<Tensor>& lengths) {
  const SymbolicRNNConfig sym = check_rnn_args_symbolic(
      parse_mode(mode),
      input,
      hx,
      cx,
      params,
      has_biases,
      num_layers,
      dropout,
      train,
      bidirectional,
      batch_first,
      lengths);
  check_backward_args(
      sym, input, output, reserve, grad_output, grad_hy, grad_cy);
  const RNNConfig& cfg = sym.cfg;
  const auto opts = input.options();
  const bool has_hx = hx.has_value() && hx->defined();
  const bool has_cx = cx.has_value() && cx->defined();
  Tensor grad_input = output_mask[0] ? sequence_like(sym, cfg.input_size, opts)
                                     : at::empty({0}, opts);
  Tensor grad_hx = output_mask[1] && has_hx
      ? state_like(sym, cfg.proj_size, opts)
      : at::empty({0}, opts);
  Tensor grad_cx = output_mask[2] && has_cx && cfg.mode == Mode::LSTM
      ? state_like(sym, cfg.hidden_size, opts)
      : at::empty({0}, opts);
  std::vector<Tensor> grad_params;
  if (output_mask[3]) {
    for (const auto& p : params) {
      grad_params.push_back(at::empty_symint(p.sym_sizes(), opts));
    }
  }
  return {grad_input, grad_hx, grad_cx, grad_params};
}

} // namespace

TORCH_LIBRARY_IMPL(deeprnn, Meta, m) {
  m.impl("_rnn_forward", &rnn_forward_meta);
  m.impl("_rnn_backward", &rnn_backward_meta);
}

} // namespace deeprnn
