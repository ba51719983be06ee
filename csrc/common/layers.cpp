#include "common/layers.h"

#include <ATen/ATen.h>
#include <c10/util/irange.h>

namespace deeprnn {

std::optional<LengthsPlan> plan_on_host(
    const RNNConfig& cfg,
    const std::optional<at::Tensor>& lengths) {
  if (!present(lengths)) {
    return std::nullopt;
  }
  return plan_lengths(cfg, lengths->cpu().contiguous());
}

BatchOrder::BatchOrder(
    const std::optional<LengthsPlan>& plan,
    c10::Device device) {
  if (plan.has_value() && plan->permuted()) {
    const auto& order = plan->order;
    std::vector<int64_t> inverse(order.size());
    for (const auto i : c10::irange(order.size())) {
      inverse[order[i]] = static_cast<int64_t>(i);
    }
    to_sorted_ = at::tensor(order, at::kLong).to(device);
    to_caller_ = at::tensor(inverse, at::kLong).to(device);
  }
}

at::Tensor BatchOrder::sorted(const at::Tensor& t, int64_t dim) const {
  return to_sorted_.defined() ? t.index_select(dim, to_sorted_)
                              : t.contiguous();
}

at::Tensor BatchOrder::to_caller(const at::Tensor& t, int64_t dim) const {
  return to_caller_.defined() ? t.index_select(dim, to_caller_) : t;
}

at::Tensor reverse_start_rows(
    const LengthsPlan& plan,
    int64_t batch,
    c10::Device device) {
  std::vector<int64_t> rows(batch);
  for (const auto b : c10::irange(batch)) {
    rows[b] = (plan.sorted[b] - 1) * batch + b;
  }
  return at::tensor(rows, at::kLong).to(device);
}

std::vector<CellParams> unpack_params(
    const RNNConfig& cfg,
    at::TensorList params) {
  std::vector<CellParams> cells;
  const int64_t per = cfg.params_per_direction;
  for (int64_t base = 0; base < static_cast<int64_t>(params.size());
       base += per) {
    CellParams c;
    c.w_ih = params[base].contiguous();
    c.w_hh = params[base + 1].contiguous();
    if (cfg.has_biases) {
      c.b_ih = params[base + 2].contiguous();
      c.b_hh = params[base + 3].contiguous();
    }
    if (cfg.has_proj) {
      c.w_hr = params[base + per - 1].contiguous();
    }
    cells.push_back(std::move(c));
  }
  return cells;
}

at::Tensor stacked_input_weights(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer) {
  if (cfg.num_directions == 1) {
    return cells[layer].w_ih;
  }
  return at::cat({cells[2 * layer].w_ih, cells[2 * layer + 1].w_ih}, 0);
}

at::Tensor input_bias(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::TensorOptions& opts) {
  const int64_t D = cfg.num_directions, G = cfg.gates, H = cfg.hidden_size;
  at::Tensor bias = at::zeros({D, G * H}, opts);
  if (cfg.has_biases) {
    for (const auto d : c10::irange(D)) {
      const CellParams& c = cells[layer * D + d];
      at::Tensor row = bias.select(0, d);
      at::add_out(row, c.b_ih, c.b_hh);
      if (cfg.mode == Mode::GRU) {
        row.narrow(0, 2 * H, H).copy_(c.b_ih.narrow(0, 2 * H, H));
      }
    }
  }
  return bias;
}

at::Tensor recurrent_bias(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::TensorOptions& opts) {
  const int64_t D = cfg.num_directions, H = cfg.hidden_size;
  at::Tensor bias = at::zeros({D, H}, opts);
  if (cfg.has_biases) {
    for (const auto d : c10::irange(D)) {
      bias.select(0, d).copy_(cells[layer * D + d].b_hh.narrow(0, 2 * H, H));
    }
  }
  return bias;
}

std::vector<LayerReserve> split_reserve(
    const RNNConfig& cfg,
    const at::Tensor& reserve) {
  std::vector<LayerReserve> layers(cfg.num_layers);
  if (!reserve.defined() || reserve.numel() == 0) {
    return layers;
  }
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  int64_t offset = 0;
  auto take = [&](int64_t numel, int64_t width) {
    if (numel == 0) {
      return at::Tensor();
    }
    at::Tensor piece = reserve.narrow(0, offset, numel).view({T, B, width});
    offset += numel;
    return piece;
  };
  for (const auto l : c10::irange(cfg.num_layers)) {
    const ReserveLayout layout = reserve_layer_layout(
        cfg.mode,
        T,
        B,
        cfg.hidden_size,
        cfg.proj_size,
        cfg.has_proj,
        D,
        l == cfg.num_layers - 1,
        cfg.uses_dropout(),
        cfg.op_name);
    const int64_t H = cfg.hidden_size, P = cfg.proj_size;
    layers[l].gates = take(layout.gates, D * cfg.gates * H);
    layers[l].cells = take(layout.cells, D * H);
    layers[l].hidden = take(layout.hidden, D * H);
    layers[l].output = take(layout.output, D * P);
    layers[l].mask = take(layout.mask, D * P);
  }
  return layers;
}

at::Tensor draw_dropout_mask(const at::Tensor& mask_storage, double p) {
  if (p >= 1.0) {
    return mask_storage.zero_();
  }
  return mask_storage.bernoulli_(1.0 - p).div_(1.0 - p);
}

void layer_weight_and_input_gradients(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::Tensor& layer_input,
    const at::Tensor& y,
    const at::Tensor& h0,
    const LayerReserve& saved,
    const at::Tensor& dgates_x,
    const at::Tensor& dgates_h,
    const at::Tensor& dh_total,
    bool need_input_grad,
    bool need_param_grads,
    at::Tensor& dx,
    std::vector<at::Tensor>& dparams,
    const LengthsPlan* plan) {
  using at::Tensor;
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t H = cfg.hidden_size, P = cfg.proj_size, G = cfg.gates;
  const auto opts = y.options();
  if (need_param_grads) {
    const int64_t per = cfg.params_per_direction;
    for (const auto d : c10::irange(D)) {
      const int64_t base = (layer * D + d) * per;
      const Tensor dgx_d =
          dgates_x.narrow(2, d * G * H, G * H).view({T * B, G * H});
      const Tensor dgh_d =
          dgates_h.narrow(2, d * G * H, G * H).view({T * B, G * H});
      at::mm_out(
          dparams[base],
          dgx_d.t(),
          layer_input.view({T * B, layer_input.size(2)}));
      // dW_hh = sum_t dG_h(t)^T h_{t-1}: the step that read h0 in one GEMM,
      // the steps whose h_{t-1} is a row of y added in another (none at
      // T = 1, as in decoding: an empty GEMM would only zero-fill dW_hh).
      const int64_t first = d == 0 ? 0 : T - 1;
      const int64_t rest_begin = d == 0 ? 1 : 0; // steps reading y
      const int64_t y_begin = d == 0 ? 0 : 1; // their h_{t-1} rows of y
      // With lengths, the reverse direction reads h0 at each sequence's
      // last valid step: gather those rows of dG_h (in the second GEMM they
      // meet the zeros that y holds past a sequence's end).
      const Tensor dgh_first = d == 1 && plan != nullptr
          ? dgates_h.view({T * B, D * G * H})
                .index_select(0, reverse_start_rows(*plan, B, opts.device()))
                .narrow(1, G * H, G * H)
          : dgates_h.select(0, first).narrow(1, d * G * H, G * H);
      at::mm_out(dparams[base + 1], dgh_first.t(), h0.select(0, layer * D + d));
      if (T > 1) {
        const Tensor dgh_rest = dgates_h.narrow(0, rest_begin, T - 1)
                                    .narrow(2, d * G * H, G * H)
                                    .view({(T - 1) * B, G * H});
        const Tensor h_rest = y.narrow(0, y_begin, T - 1)
                                  .narrow(2, d * P, P)
                                  .view({(T - 1) * B, P});
        at::addmm_out(
            dparams[base + 1], dparams[base + 1], dgh_rest.t(), h_rest);
      }
      if (cfg.has_biases) {
        at::sum_out(dparams[base + 2], dgx_d, {0});
        at::sum_out(dparams[base + 3], dgh_d, {0});
      }
      if (cfg.has_proj) {
        const Tensor hidden_d =
            saved.hidden.narrow(2, d * H, H).view({T * B, H});
        at::mm_out(
            dparams[base + per - 1],
            dh_total.narrow(2, d * P, P).view({T * B, P}).t(),
            hidden_d);
      }
    }
  }

  if (need_input_grad) {
    dx = at::empty({T, B, layer_input.size(2)}, opts);
    Tensor dx_2d = dx.view({T * B, layer_input.size(2)});
    at::mm_out(
        dx_2d,
        dgates_x.view({T * B, D * G * H}),
        stacked_input_weights(cfg, cells, layer));
  }
}

} // namespace deeprnn
