#include "common/layers.h"

#include "cpu/packed_gemm.h"

#include <ATen/ATen.h>
#include <c10/util/irange.h>

#include <algorithm>

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

namespace {

// out = a @ b for the first contribution to out, out += a @ b after.
void mm_into(
    at::Tensor& out,
    const at::Tensor& a,
    const at::Tensor& b,
    std::vector<bool>::reference written) {
  if (cpu::onednn_matmul_out(out, a, b, written)) {
    written = true;
  } else if (written) {
    at::addmm_out(out, out, a, b);
  } else {
    at::mm_out(out, a, b);
    written = true;
  }
}

// out = the column sums of rows [N, width], assigned or added as mm_into.
void column_sums_into(
    at::Tensor& out,
    const at::Tensor& rows,
    std::vector<bool>::reference written) {
  if (written) {
    out.add_(rows.sum(0));
  } else {
    at::sum_out(out, rows, {0});
    written = true;
  }
}

} // namespace

void add_chunk_gradients(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::Tensor& layer_input,
    const at::Tensor& y,
    const LayerReserve& saved,
    const at::Tensor& dgates_x,
    const at::Tensor& dgates_h,
    const at::Tensor& dh_total,
    const StepChunk& chunk,
    bool need_param_grads,
    const at::Tensor& dx,
    std::vector<at::Tensor>& dparams,
    std::vector<bool>& written) {
  using at::Tensor;
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t H = cfg.hidden_size, P = cfg.proj_size, G = cfg.gates;
  const int64_t n = chunk.steps, I = layer_input.size(2);
  // Direction d's `width` columns of the chunk's steps, [n*B, width].
  auto chunk_rows = [&](const Tensor& buffer, int64_t d, int64_t width) {
    return buffer.narrow(0, 0, n)
        .narrow(2, d * width, width)
        .view({n * B, width});
  };
  // Rows [first, first + steps) of a [T, B, D*width] tensor, direction d.
  auto step_rows = [&](const Tensor& sequence,
                       int64_t first,
                       int64_t steps,
                       int64_t d,
                       int64_t width) {
    return sequence.narrow(0, first, steps)
        .narrow(2, d * width, width)
        .view({steps * B, width});
  };
  if (need_param_grads) {
    const int64_t per = cfg.params_per_direction;
    for (const auto d : c10::irange(D)) {
      const int64_t base = (layer * D + d) * per;
      const int64_t first = chunk.first[d];
      const Tensor dgx_d = chunk_rows(dgates_x, d, G * H);
      const Tensor dgh_d = chunk_rows(dgates_h, d, G * H);
      mm_into(
          dparams[base],
          dgx_d.t(),
          layer_input.narrow(0, first, n).view({n * B, I}),
          written[base]);
      // dW_hh += dG_h(t)^T h_{t-1} over the chunk's steps whose h_{t-1} is
      // a row of y: t >= 1 forward, t <= T - 2 in reverse. (With lengths,
      // a reverse row's first step meets the zeros y holds past its end;
      // the steps that read h0 are add_initial_state_gradient's.)
      const int64_t begin = d == 0 ? std::max<int64_t>(first, 1) : first;
      const int64_t end = d == 0 ? first + n : std::min(first + n, T - 1);
      if (end > begin) {
        const Tensor dgh_rest = dgates_h.narrow(0, begin - first, end - begin)
                                    .narrow(2, d * G * H, G * H)
                                    .view({(end - begin) * B, G * H});
        const int64_t y_first = d == 0 ? begin - 1 : begin + 1;
        mm_into(
            dparams[base + 1],
            dgh_rest.t(),
            step_rows(y, y_first, end - begin, d, P),
            written[base + 1]);
      }
      if (cfg.has_biases) {
        column_sums_into(dparams[base + 2], dgx_d, written[base + 2]);
        if (dgates_h.is_same(dgates_x)) {
          // RNN and LSTM: dG_h is dG_x, so db_hh equals db_ih.
          dparams[base + 3].copy_(dparams[base + 2]);
          written[base + 3] = true;
        } else {
          column_sums_into(dparams[base + 3], dgh_d, written[base + 3]);
        }
      }
      if (cfg.has_proj) {
        mm_into(
            dparams[base + per - 1],
            chunk_rows(dh_total, d, P).t(),
            step_rows(saved.hidden, first, n, d, H),
            written[base + per - 1]);
      }
    }
  }

  if (dx.defined()) {
    if (D == 1 || chunk.first[0] == chunk.first[1]) {
      // Both directions' steps are the same: one GEMM with [W_ih_fwd;
      // W_ih_rev] (no other chunk reached these steps).
      Tensor dx_rows = dx.narrow(0, chunk.first[0], n).view({n * B, I});
      const Tensor dgates_rows =
          dgates_x.narrow(0, 0, n).view({n * B, D * G * H});
      const Tensor weights = stacked_input_weights(cfg, cells, layer);
      if (!cpu::onednn_matmul_out(dx_rows, dgates_rows, weights, false)) {
        at::mm_out(dx_rows, dgates_rows, weights);
      }
    } else {
      for (const auto d : c10::irange(D)) {
        Tensor dx_rows = dx.narrow(0, chunk.first[d], n).view({n * B, I});
        const Tensor dgates_rows = chunk_rows(dgates_x, d, G * H);
        if (!cpu::onednn_matmul_out(
                dx_rows, dgates_rows, cells[layer * D + d].w_ih, true)) {
          at::addmm_out(
              dx_rows, dx_rows, dgates_rows, cells[layer * D + d].w_ih);
        }
      }
    }
  }
}

void add_initial_state_gradient(
    const RNNConfig& cfg,
    int64_t layer,
    int64_t d,
    const at::Tensor& h0,
    const at::Tensor& dgh_initial,
    std::vector<at::Tensor>& dparams,
    std::vector<bool>& written) {
  const int64_t index =
      (layer * cfg.num_directions + d) * cfg.params_per_direction + 1;
  mm_into(
      dparams[index],
      dgh_initial.t(),
      h0.select(0, layer * cfg.num_directions + d),
      written[index]);
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
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t G = cfg.gates, H = cfg.hidden_size;
  if (need_input_grad) {
    dx = at::empty({T, B, layer_input.size(2)}, y.options());
  }
  std::vector<bool> written(dparams.size(), false);
  add_chunk_gradients(
      cfg,
      cells,
      layer,
      layer_input,
      y,
      saved,
      dgates_x,
      dgates_h,
      dh_total,
      StepChunk{T, {0, 0}},
      need_param_grads,
      need_input_grad ? dx : at::Tensor(),
      dparams,
      written);
  if (need_param_grads) {
    for (const auto d : c10::irange(D)) {
      // dG_h at each row's first step: t = 0 forward, t = T - 1 in reverse,
      // or with lengths each sequence's last valid step (gathered).
      const at::Tensor dgh_initial = d == 1 && plan != nullptr
          ? dgates_h.view({T * B, D * G * H})
                .index_select(0, reverse_start_rows(*plan, B, y.device()))
                .narrow(1, G * H, G * H)
          : dgates_h.select(0, d == 0 ? 0 : T - 1).narrow(1, d * G * H, G * H);
      add_initial_state_gradient(
          cfg, layer, d, h0, dgh_initial, dparams, written);
    }
  }
}

} // namespace deeprnn
