#pragma once

// The operator-level drivers of _rnn_forward and _rnn_backward, shared by
// the CPU and CUDA kernels: argument checks, the batch order of variable
// lengths, initial states, the reserve, the layer loop with dropout between
// layers, and the results back in the caller's order. A backend supplies
//
//   struct Backend {
//     static constexpr const char* kForwardName, kBackwardName;  // dispatch
//     static <guard> guard(c10::Device);  // e.g. a CUDAGuard; CPU: nothing
//     // a large buffer that calls free and allocate again (the reserve, a
//     // layer's output, the weight gradients): CPU from its buffer cache,
//     // CUDA at::empty
//     static at::Tensor empty_buffer(at::IntArrayRef sizes, options);
//     template <typename scalar_t> static void forward_layer(...);
//     template <typename scalar_t> static void backward_layer(...);
//     // optional: every layer's forward (backward) at once (CUDA's
//     // wavefront across the layers, cuda/persistent.cuh); returns false,
//     // having done nothing, where it does not apply, and the layers run
//     // one by one
//     template <typename scalar_t> static bool forward_stack(...);
//     template <typename scalar_t> static bool backward_stack(...);
//   };
//
// with forward_layer/backward_layer as the backends' own (cpu/rnn_cpu.cpp),
// and registers rnn_forward<Backend> / rnn_backward<Backend>.

#include "common/config.h"
#include "common/layers.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/irange.h>
#include <c10/util/string_view.h>

#include <array>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

namespace deeprnn {

// Whether Backend has the optional forward_stack (backward_stack).
template <typename Backend, typename = void>
struct HasForwardStack : std::false_type {};
template <typename Backend>
struct HasForwardStack<
    Backend,
    std::void_t<decltype(&Backend::template forward_stack<float>)>>
    : std::true_type {};
template <typename Backend, typename = void>
struct HasBackwardStack : std::false_type {};
template <typename Backend>
struct HasBackwardStack<
    Backend,
    std::void_t<decltype(&Backend::template backward_stack<float>)>>
    : std::true_type {};

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_forward(
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
    c10::string_view mode,
    bool need_reserve,
    const std::optional<at::Tensor>& lengths) {
  const RNNConfig cfg = check_rnn_args(
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
  [[maybe_unused]] const auto device_guard = Backend::guard(input.device());
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t L = cfg.num_layers, H = cfg.hidden_size, P = cfg.proj_size;
  const auto opts = input.options();
  const std::optional<LengthsPlan> plan = plan_on_host(cfg, lengths);
  const BatchOrder order(plan, input.device());

  // Computed in the kernels' batch order, restored at the end.
  at::Tensor output = at::empty({T, B, D * P}, opts);
  at::Tensor hy = at::empty({L * D, B, P}, opts);
  at::Tensor cy = cfg.mode == Mode::LSTM ? at::empty({L * D, B, H}, opts)
                                         : at::empty({0}, opts);
  at::Tensor reserve =
      Backend::empty_buffer({need_reserve ? reserve_numel(cfg) : 0}, opts);
  const auto saved = split_reserve(cfg, reserve);

  if (B > 0) {
    const at::Tensor h0 =
        present(hx) ? order.sorted(*hx, 1) : at::zeros({L * D, B, P}, opts);
    const at::Tensor c0 = cfg.mode != Mode::LSTM ? at::Tensor()
        : present(cx)                            ? order.sorted(*cx, 1)
                      : at::zeros({L * D, B, H}, opts);
    const auto cells = unpack_params(cfg, params);
    at::Tensor layer_input =
        order.sorted(batch_first ? input.transpose(0, 1) : input, 1);
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16,
        at::kHalf,
        input.scalar_type(),
        Backend::kForwardName,
        [&] {
          // The dropout masks between the layers, drawn as each layer ends
          // or, for a backend that may run the layers in one go, all
          // before (the same draws in the same order: the same masks).
          std::vector<at::Tensor> masks(L);
          auto draw_mask = [&](int64_t l) {
            at::Tensor storage = saved[l].mask.defined()
                ? saved[l].mask
                : at::empty({T, B, D * P}, opts);
            masks[l] = draw_dropout_mask(storage, cfg.dropout);
          };
          if constexpr (HasForwardStack<Backend>::value) {
            if (cfg.uses_dropout()) {
              for (const auto l : c10::irange(L - 1)) {
                draw_mask(l);
              }
            }
            if (Backend::template forward_stack<scalar_t>(
                    cfg,
                    cells,
                    layer_input,
                    h0,
                    c0,
                    saved,
                    masks,
                    output,
                    hy,
                    cy,
                    plan ? &*plan : nullptr)) {
              return;
            }
          }
          for (const auto l : c10::irange(L)) {
            const bool last = l == L - 1;
            const at::Tensor y = last ? output
                : saved[l].output.defined()
                ? saved[l].output
                : Backend::empty_buffer({T, B, D * P}, opts);
            Backend::template forward_layer<scalar_t>(
                cfg,
                cells,
                l,
                layer_input,
                h0,
                c0,
                saved[l],
                y,
                hy,
                cy,
                plan ? &*plan : nullptr);
            if (!last) {
              if (cfg.uses_dropout()) {
                if (!masks[l].defined()) {
                  draw_mask(l);
                }
                layer_input = y * masks[l];
              } else {
                layer_input = y;
              }
            }
          }
        });
  }
  output = order.to_caller(output, 1);
  hy = order.to_caller(hy, 1);
  if (cfg.mode == Mode::LSTM) {
    cy = order.to_caller(cy, 1);
  }
  if (batch_first) {
    output = output.transpose(0, 1);
  }
  return {output, hy, cy, reserve};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>
rnn_backward(
    const at::Tensor& input,
    const std::optional<at::Tensor>& hx,
    const std::optional<at::Tensor>& cx,
    at::TensorList params,
    const at::Tensor& output,
    const at::Tensor& reserve,
    const std::optional<at::Tensor>& grad_output,
    const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    c10::string_view mode,
    std::array<bool, 4> output_mask,
    const std::optional<at::Tensor>& lengths) {
  SymbolicRNNConfig checked = check_rnn_args_symbolic(
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
      checked, input, output, reserve, grad_output, grad_hy, grad_cy);
  const RNNConfig cfg = concrete_config(std::move(checked));
  [[maybe_unused]] const auto device_guard = Backend::guard(input.device());
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t L = cfg.num_layers, H = cfg.hidden_size, P = cfg.proj_size;
  const auto opts = input.options();
  const std::optional<LengthsPlan> plan = plan_on_host(cfg, lengths);
  const BatchOrder order(plan, input.device());

  const bool lstm = cfg.mode == Mode::LSTM;
  // grad_hx and grad_cx are computed in the kernels' batch order.
  at::Tensor grad_input = at::empty({0}, opts);
  at::Tensor grad_hx = output_mask[1] && present(hx)
      ? at::empty({L * D, B, P}, opts)
      : at::empty({0}, opts);
  at::Tensor grad_cx = output_mask[2] && present(cx) && lstm
      ? at::empty({L * D, B, H}, opts)
      : at::empty({0}, opts);
  // Freed by the caller after the optimizer step (or added into .grad and
  // freed): a buffer the next backward reuses.
  std::vector<at::Tensor> grad_params;
  if (output_mask[3]) {
    for (const auto& p : params) {
      grad_params.push_back(Backend::empty_buffer(p.sizes(), opts));
    }
  }

  if (B == 0) {
    if (output_mask[0]) {
      grad_input = at::zeros({T, B, cfg.input_size}, opts);
      if (batch_first) {
        grad_input = grad_input.transpose(0, 1);
      }
    }
    for (auto& g : grad_params) {
      g.zero_();
    }
    return {grad_input, grad_hx, grad_cx, grad_params};
  }

  auto time_major = [&](const std::optional<at::Tensor>& t) {
    if (!present(t)) {
      return at::zeros({T, B, D * P}, opts);
    }
    return order.sorted(batch_first ? t->transpose(0, 1) : *t, 1);
  };
  auto state_or_zeros = [&](const std::optional<at::Tensor>& t, int64_t width) {
    if (!present(t)) {
      return at::zeros({L * D, B, width}, opts);
    }
    return order.sorted(*t, 1);
  };
  at::Tensor x = order.sorted(batch_first ? input.transpose(0, 1) : input, 1);
  if (plan.has_value() && output_mask[3]) {
    // dW_ih = dG^T x runs over every row, padding included, where dG is 0:
    // zero the padding of (a copy of) x so that whatever the caller left
    // there (even inf or NaN) cannot leak into the sum.
    if (!order.permuted()) {
      x = x.clone();
    }
    for (const auto t : c10::irange(T)) {
      const int64_t rows = plan->active[t];
      if (rows < B) {
        x.select(0, t).narrow(0, rows, B - rows).zero_();
      }
    }
  }
  const at::Tensor y_last = time_major(output);
  const at::Tensor h0 = state_or_zeros(hx, P);
  const at::Tensor c0 = lstm ? state_or_zeros(cx, H) : at::Tensor();
  const at::Tensor dhy = state_or_zeros(grad_hy, P);
  const at::Tensor dcy = lstm ? state_or_zeros(grad_cy, H) : at::Tensor();
  const auto saved = split_reserve(cfg, reserve);
  const auto cells = unpack_params(cfg, params);
  const at::Tensor dhx_all = grad_hx.numel() ? grad_hx : at::Tensor();
  const at::Tensor dcx_all = grad_cx.numel() ? grad_cx : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16,
      at::kHalf,
      input.scalar_type(),
      Backend::kBackwardName,
      [&] {
        at::Tensor dy = time_major(grad_output);
        if constexpr (HasBackwardStack<Backend>::value) {
          at::Tensor dx;
          if (Backend::template backward_stack<scalar_t>(
                  cfg,
                  cells,
                  x,
                  y_last,
                  h0,
                  c0,
                  saved,
                  dy,
                  dhy,
                  dcy,
                  output_mask[0],
                  output_mask[3],
                  dx,
                  dhx_all,
                  dcx_all,
                  grad_params,
                  plan ? &*plan : nullptr)) {
            if (output_mask[0]) {
              grad_input = order.to_caller(dx, 1);
              if (batch_first) {
                grad_input = grad_input.transpose(0, 1);
              }
            }
            return;
          }
        }
        for (int64_t l = L - 1; l >= 0; --l) {
          at::Tensor layer_input = x;
          if (l > 0) {
            layer_input = cfg.uses_dropout()
                ? saved[l - 1].output * saved[l - 1].mask
                : saved[l - 1].output;
          }
          const at::Tensor& y = l == L - 1 ? y_last : saved[l].output;
          at::Tensor dx;
          Backend::template backward_layer<scalar_t>(
              cfg,
              cells,
              l,
              layer_input,
              y,
              h0,
              c0,
              saved[l],
              dy,
              dhy,
              dcy,
              l > 0 || output_mask[0],
              output_mask[3],
              dx,
              dhx_all,
              dcx_all,
              grad_params,
              plan ? &*plan : nullptr);
          if (l > 0) {
            dy = cfg.uses_dropout() ? dx * saved[l - 1].mask : dx;
          } else if (output_mask[0]) {
            grad_input = order.to_caller(dx, 1);
            if (batch_first) {
              grad_input = grad_input.transpose(0, 1);
            }
          }
        }
      });
  if (grad_hx.numel()) {
    grad_hx = order.to_caller(grad_hx, 1);
  }
  if (grad_cx.numel()) {
    grad_cx = order.to_caller(grad_cx, 1);
  }
  return {grad_input, grad_hx, grad_cx, grad_params};
}

} // namespace deeprnn
