#include "common/config.h"

#include <c10/util/irange.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>
#include <numeric>
#include <sstream>

namespace deeprnn {
namespace {

// Sizes may be symbolic (fake tensors under torch.compile and torch.export);
// a SymInt prints as its value or its symbol.
std::string shape_str(c10::SymIntArrayRef sizes) {
  std::ostringstream out;
  out << "(";
  for (const auto i : c10::irange(sizes.size())) {
    out << (i ? ", " : "") << sizes[i];
  }
  if (sizes.size() == 1) {
    out << ",";
  }
  out << ")";
  return out.str();
}

const char* dtype_str(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return "float";
    case at::kDouble:
      return "double";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "half";
    default:
      return c10::toString(type);
  }
}

// dtype and device of a tensor that must match input's; `where` is the op
// ("deeprnn.lstm") or its backward ("deeprnn.lstm backward").
void check_like_input(
    const std::string& where,
    const char* name,
    const at::Tensor& tensor,
    const at::Tensor& input) {
  TORCH_CHECK(
      tensor.scalar_type() == input.scalar_type(),
      where,
      ": ",
      name,
      " must have the dtype of input (",
      dtype_str(input.scalar_type()),
      "), got ",
      dtype_str(tensor.scalar_type()));
  TORCH_CHECK(
      tensor.device() == input.device(),
      where,
      ": ",
      name,
      " must be on the device of input (",
      input.device(),
      "), got ",
      tensor.device());
}

void check_state(
    const RNNConfig& cfg,
    const c10::SymInt& batch,
    const at::Tensor& input,
    const std::optional<at::Tensor>& state,
    const char* name,
    int64_t width,
    const char* width_name) {
  if (!state.has_value() || !state->defined()) {
    return;
  }
  const std::vector<c10::SymInt> expected = {
      c10::SymInt(cfg.num_layers * cfg.num_directions), batch, width};
  TORCH_CHECK(
      state->sym_sizes() == c10::SymIntArrayRef(expected),
      cfg.op_name,
      ": ",
      name,
      " must have shape ",
      shape_str(expected),
      " = (num_layers*num_directions, batch, ",
      width_name,
      "), got ",
      shape_str(state->sym_sizes()));
  check_like_input(cfg.op_name, name, *state, input);
}

// Dtype, shape and device of lengths; the values are checked by
// plan_lengths, where they are read.
void check_lengths(
    const SymbolicRNNConfig& checked,
    const at::Tensor& input,
    const std::optional<at::Tensor>& lengths) {
  if (!lengths.has_value() || !lengths->defined()) {
    return;
  }
  const std::string& op = checked.cfg.op_name;
  TORCH_CHECK(
      lengths->scalar_type() == at::kLong,
      op,
      ": lengths must be an int64 tensor, got ",
      dtype_str(lengths->scalar_type()));
  const std::vector<c10::SymInt> expected = {checked.batch};
  TORCH_CHECK(
      lengths->sym_sizes() == c10::SymIntArrayRef(expected),
      op,
      ": lengths must have shape ",
      shape_str(expected),
      " = (batch,), got ",
      shape_str(lengths->sym_sizes()));
  TORCH_CHECK(
      lengths->device().is_cpu() || lengths->device() == input.device(),
      op,
      ": lengths must be on the CPU or on the device of input (",
      input.device(),
      "), got ",
      lengths->device());
}

// A size that must be a plain number (a weight's size): specialised when
// symbolic.
int64_t concrete(const c10::SymInt& size) {
  return size.guard_int(__FILE__, __LINE__);
}

} // namespace

Mode parse_mode(c10::string_view mode) {
  if (mode == "lstm") {
    return Mode::LSTM;
  }
  if (mode == "gru") {
    return Mode::GRU;
  }
  if (mode == "rnn_tanh") {
    return Mode::RNN_TANH;
  }
  if (mode == "rnn_relu") {
    return Mode::RNN_RELU;
  }
  TORCH_CHECK(
      false,
      "deeprnn: unknown mode '",
      std::string(mode),
      "', expected one of 'lstm', 'gru', 'rnn_tanh', 'rnn_relu'");
}

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::LSTM:
      return "lstm";
    case Mode::GRU:
      return "gru";
    case Mode::RNN_TANH:
      return "rnn_tanh";
    case Mode::RNN_RELU:
      return "rnn_relu";
  }
  return "?";
}

int64_t gate_count(Mode mode) {
  switch (mode) {
    case Mode::LSTM:
      return 4;
    case Mode::GRU:
      return 3;
    default:
      return 1;
  }
}

std::string param_name(const RNNConfig& cfg, int64_t index) {
  const int64_t per_layer = cfg.params_per_direction * cfg.num_directions;
  const int64_t layer = index / per_layer;
  const int64_t direction = (index % per_layer) / cfg.params_per_direction;
  int64_t slot = index % cfg.params_per_direction;
  if (!cfg.has_biases && slot >= 2) {
    slot += 2; // without biases the projection follows the weights
  }
  static const char* kNames[] = {
      "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"};
  std::ostringstream out;
  out << kNames[slot] << "_l" << layer << (direction ? "_reverse" : "");
  return out.str();
}

SymbolicRNNConfig check_rnn_args_symbolic(
    Mode mode,
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
    const std::optional<at::Tensor>& lengths) {
  SymbolicRNNConfig checked;
  RNNConfig& cfg = checked.cfg;
  cfg.mode = mode;
  cfg.op_name = std::string("deeprnn.") + mode_name(mode);
  const std::string& op = cfg.op_name;
  cfg.gates = gate_count(mode);
  cfg.has_biases = has_biases;
  cfg.batch_first = batch_first;
  cfg.train = train;
  cfg.dropout = dropout;
  cfg.num_directions = bidirectional ? 2 : 1;

  TORCH_CHECK(
      num_layers >= 1, op, ": num_layers must be >= 1, got ", num_layers);
  cfg.num_layers = num_layers;
  TORCH_CHECK(
      dropout >= 0.0 && dropout <= 1.0,
      op,
      ": dropout must be in [0, 1], got ",
      dropout);

  TORCH_CHECK(input.defined(), op, ": input is undefined");
  TORCH_CHECK(
      input.dim() == 3,
      op,
      ": expected 3-D input ",
      batch_first ? "(batch, seq_len, input_size)"
                  : "(seq_len, batch, input_size)",
      ", got a ",
      input.dim(),
      "-D tensor of shape ",
      shape_str(input.sym_sizes()));
  const auto dtype = input.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 ||
          dtype == at::kHalf,
      op,
      ": input must be a floating point tensor (float, double, bfloat16 or "
      "half), got ",
      dtype_str(dtype));
  checked.seq_len = input.sym_size(batch_first ? 1 : 0);
  checked.batch = input.sym_size(batch_first ? 0 : 1);
  TORCH_CHECK(
      checked.seq_len >= 1,
      op,
      ": input must have at least one time step, got seq_len 0 (input "
      "shape ",
      shape_str(input.sym_sizes()),
      ")");

  // Parameters: count, then the first layer tells the sizes, then every
  // tensor's shape, dtype and device.
  const int64_t base = has_biases ? 4 : 2;
  const int64_t count = static_cast<int64_t>(params.size());
  const int64_t directions = cfg.num_directions;
  // Every layer has at least one tensor, so num_layers > count cannot match
  // (and the products below cannot overflow once it is ruled out).
  const bool plausible = num_layers <= count;
  const bool count_plain = plausible && count == num_layers * directions * base;
  const bool count_proj = plausible && mode == Mode::LSTM &&
      count == num_layers * directions * (base + 1);
  int64_t expected_count = 0;
  const bool expected_fits =
      !c10::mul_overflows(num_layers, directions * base, &expected_count);
  TORCH_CHECK(
      count_plain || count_proj,
      op,
      ": expected ",
      expected_fits ? std::to_string(expected_count)
                    : std::to_string(num_layers) + "*" +
              std::to_string(directions) + "*" + std::to_string(base),
      " parameter tensors (num_layers*num_directions*",
      base,
      mode == Mode::LSTM ? ", or one more per layer and direction with "
                           "projection"
                         : "",
      "), got ",
      count);
  cfg.has_proj = count_proj;
  cfg.params_per_direction = base + (cfg.has_proj ? 1 : 0);

  for (const auto i : c10::irange(count)) {
    TORCH_CHECK(
        params[i].defined(),
        op,
        ": parameter ",
        i,
        " (",
        param_name(cfg, i),
        ") is undefined");
  }
  // The weights fix the layer's sizes; where they are symbolic, the sizes are
  // specialised to their values (a recompile per hidden size, as for any
  // weight shape).
  const at::Tensor& w_ih0 = params[0];
  TORCH_CHECK(
      w_ih0.dim() == 2,
      op,
      ": parameter 0 (weight_ih_l0) must be a 2-D tensor of shape (",
      cfg.gates,
      "*hidden_size, input_size), got ",
      shape_str(w_ih0.sym_sizes()));
  const int64_t gate_rows = concrete(w_ih0.sym_size(0));
  TORCH_CHECK(
      gate_rows % cfg.gates == 0 && gate_rows > 0,
      op,
      ": parameter 0 (weight_ih_l0) must be a 2-D tensor of shape (",
      cfg.gates,
      "*hidden_size, input_size), got ",
      shape_str(w_ih0.sym_sizes()));
  cfg.hidden_size = gate_rows / cfg.gates;
  cfg.input_size = concrete(w_ih0.sym_size(1));
  if (cfg.has_proj) {
    const at::Tensor& w_hr0 = params[cfg.params_per_direction - 1];
    TORCH_CHECK(
        w_hr0.dim() == 2 && w_hr0.sym_size(1) == cfg.hidden_size,
        op,
        ": parameter ",
        cfg.params_per_direction - 1,
        " (weight_hr_l0) must be a 2-D tensor of shape (proj_size, ",
        cfg.hidden_size,
        "), got ",
        shape_str(w_hr0.sym_sizes()));
    cfg.proj_size = concrete(w_hr0.sym_size(0));
    TORCH_CHECK(
        cfg.proj_size >= 1 && cfg.proj_size < cfg.hidden_size,
        op,
        ": proj_size must be in [1, hidden_size) = [1, ",
        cfg.hidden_size,
        "), got ",
        cfg.proj_size);
  } else {
    cfg.proj_size = cfg.hidden_size;
  }
  TORCH_CHECK(
      input.sym_size(2) == cfg.input_size,
      op,
      ": input.size(-1) must be equal to input_size ",
      cfg.input_size,
      " (the width of weight_ih_l0), got ",
      input.sym_size(2));

  const int64_t gh = cfg.gates * cfg.hidden_size;
  for (const auto i : c10::irange(count)) {
    const int64_t layer = i / (cfg.params_per_direction * directions);
    int64_t slot = i % cfg.params_per_direction;
    if (!has_biases && slot >= 2) {
      slot += 2;
    }
    std::vector<c10::SymInt> expected;
    switch (slot) {
      case 0:
        expected = {gh, cfg.layer_input_size(layer)};
        break;
      case 1:
        expected = {gh, cfg.proj_size};
        break;
      case 2:
      case 3:
        expected = {gh};
        break;
      default:
        expected = {cfg.proj_size, cfg.hidden_size};
        break;
    }
    const at::Tensor& p = params[i];
    TORCH_CHECK(
        p.sym_sizes() == c10::SymIntArrayRef(expected),
        op,
        ": parameter ",
        i,
        " (",
        param_name(cfg, i),
        ") must have shape ",
        shape_str(expected),
        ", got ",
        shape_str(p.sym_sizes()));
    TORCH_CHECK(
        p.scalar_type() == dtype,
        op,
        ": all parameters must have the dtype of input (",
        dtype_str(dtype),
        "), got ",
        dtype_str(p.scalar_type()),
        " for parameter ",
        i,
        " (",
        param_name(cfg, i),
        ")");
    TORCH_CHECK(
        p.device() == input.device(),
        op,
        ": all parameters must be on the device of input (",
        input.device(),
        "), got ",
        p.device(),
        " for parameter ",
        i,
        " (",
        param_name(cfg, i),
        ")");
  }

  check_state(
      cfg,
      checked.batch,
      input,
      hx,
      "hx",
      cfg.proj_size,
      cfg.has_proj ? "proj_size" : "hidden_size");
  if (mode == Mode::LSTM) {
    check_state(
        cfg, checked.batch, input, cx, "cx", cfg.hidden_size, "hidden_size");
  } else {
    TORCH_CHECK(
        !(cx.has_value() && cx->defined()),
        op,
        ": cx is only used by LSTM, got a tensor");
  }
  check_lengths(checked, input, lengths);
  return checked;
}

RNNConfig check_rnn_args(
    Mode mode,
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
    const std::optional<at::Tensor>& lengths) {
  SymbolicRNNConfig checked = check_rnn_args_symbolic(
      mode,
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
  return concrete_config(std::move(checked));
}

RNNConfig concrete_config(SymbolicRNNConfig&& checked) {
  checked.cfg.seq_len = checked.seq_len.expect_int();
  checked.cfg.batch = checked.batch.expect_int();
  return std::move(checked.cfg);
}

LengthsPlan plan_lengths(const RNNConfig& cfg, const at::Tensor& lengths) {
  const int64_t T = cfg.seq_len, B = cfg.batch;
  TORCH_INTERNAL_ASSERT(
      lengths.device().is_cpu() && lengths.scalar_type() == at::kLong &&
      lengths.dim() == 1 && lengths.size(0) == B);
  const auto values = lengths.accessor<int64_t, 1>();
  LengthsPlan plan;
  plan.sorted.resize(B);
  bool non_increasing = true;
  for (const auto b : c10::irange(B)) {
    const int64_t length = values[b];
    TORCH_CHECK(
        length >= 1 && length <= T,
        cfg.op_name,
        ": lengths must be in 1..seq_len = 1..",
        T,
        ", got lengths[",
        b,
        "] = ",
        length);
    plan.sorted[b] = length;
    non_increasing = non_increasing && (b == 0 || length <= values[b - 1]);
  }
  if (!non_increasing) {
    plan.order.resize(B);
    std::iota(plan.order.begin(), plan.order.end(), int64_t{0});
    std::stable_sort(
        plan.order.begin(), plan.order.end(), [&](int64_t a, int64_t b) {
          return values[a] > values[b];
        });
    for (const auto i : c10::irange(B)) {
      plan.sorted[i] = values[plan.order[i]];
    }
  }
  // active[t] = #{b : length_b > t}, a prefix of the sorted batch that
  // grows as t walks down.
  plan.active.assign(T + 1, 0);
  int64_t running = 0;
  for (int64_t t = T - 1; t >= 0; --t) {
    while (running < B && plan.sorted[running] > t) {
      ++running;
    }
    plan.active[t] = running;
  }
  return plan;
}

namespace {

// `where`: "deeprnn.lstm backward".
void check_backward_tensor(
    const std::string& where,
    const char* name,
    const at::Tensor& tensor,
    c10::SymIntArrayRef expected,
    const char* expected_meaning,
    const at::Tensor& input) {
  TORCH_CHECK(tensor.defined(), where, ": ", name, " is undefined");
  TORCH_CHECK(
      tensor.sym_sizes() == expected,
      where,
      ": ",
      name,
      " must have shape ",
      shape_str(expected),
      " (",
      expected_meaning,
      "), got ",
      shape_str(tensor.sym_sizes()));
  check_like_input(where, name, tensor, input);
}

} // namespace

void check_backward_args(
    const SymbolicRNNConfig& sym,
    const at::Tensor& input,
    const at::Tensor& output,
    const at::Tensor& reserve,
    const std::optional<at::Tensor>& grad_output,
    const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy) {
  const RNNConfig& cfg = sym.cfg;
  const std::string where = cfg.op_name + " backward";
  const c10::SymInt width = cfg.num_directions * cfg.proj_size;
  const std::vector<c10::SymInt> output_shape = cfg.batch_first
      ? std::vector<c10::SymInt>{sym.batch, sym.seq_len, width}
      : std::vector<c10::SymInt>{sym.seq_len, sym.batch, width};
  const char* output_meaning = cfg.batch_first
      ? "the forward's output: (batch, seq_len, num_directions*hidden)"
      : "the forward's output: (seq_len, batch, num_directions*hidden)";
  check_backward_tensor(
      where, "output", output, output_shape, output_meaning, input);

  TORCH_CHECK(reserve.defined(), where, ": reserve is undefined");
  const c10::SymInt expected_numel = reserve_numel(sym);
  TORCH_CHECK(
      reserve.dim() == 1 && reserve.sym_numel() == expected_numel,
      where,
      ": reserve must have ",
      expected_numel,
      " elements (from _rnn_forward with need_reserve=True and the same "
      "arguments), got ",
      reserve.sym_numel());
  check_like_input(where, "reserve", reserve, input);

  if (grad_output.has_value() && grad_output->defined()) {
    check_backward_tensor(
        where,
        "grad_output",
        *grad_output,
        output_shape,
        "the shape of output",
        input);
  }
  const int64_t rows = cfg.num_layers * cfg.num_directions;
  if (grad_hy.has_value() && grad_hy->defined()) {
    check_backward_tensor(
        where,
        "grad_hy",
        *grad_hy,
        {c10::SymInt(rows), sym.batch, c10::SymInt(cfg.proj_size)},
        "the shape of hy",
        input);
  }
  if (grad_cy.has_value() && grad_cy->defined()) {
    TORCH_CHECK(
        cfg.mode == Mode::LSTM,
        where,
        ": grad_cy is only used by LSTM, got a tensor");
    check_backward_tensor(
        where,
        "grad_cy",
        *grad_cy,
        {c10::SymInt(rows), sym.batch, c10::SymInt(cfg.hidden_size)},
        "the shape of cy",
        input);
  }
}

ReserveLayout reserve_layer_layout(
    Mode mode,
    int64_t seq_len,
    int64_t batch,
    int64_t hidden_size,
    int64_t proj_size,
    bool has_proj,
    int64_t num_directions,
    bool is_last_layer,
    bool with_dropout,
    const std::string& op) {
  const int64_t rows =
      checked_mul(checked_mul(seq_len, batch, op), num_directions, op);
  ReserveLayout layout;
  const bool gated = mode == Mode::LSTM || mode == Mode::GRU;
  const int64_t per_row = checked_mul(gate_count(mode), hidden_size, op);
  layout.gates = gated ? checked_mul(rows, per_row, op) : 0;
  layout.cells = gated ? checked_mul(rows, hidden_size, op) : 0;
  layout.hidden =
      (mode == Mode::LSTM && has_proj) ? checked_mul(rows, hidden_size, op) : 0;
  layout.output = is_last_layer ? 0 : checked_mul(rows, proj_size, op);
  layout.mask =
      (!is_last_layer && with_dropout) ? checked_mul(rows, proj_size, op) : 0;
  // The sum of the blocks must fit too.
  checked_add(
      checked_add(
          checked_add(layout.gates, layout.cells, op), layout.hidden, op),
      checked_add(layout.output, layout.mask, op),
      op);
  return layout;
}

int64_t reserve_numel_per_position(const RNNConfig& cfg) {
  int64_t total = 0;
  for (const auto layer : c10::irange(cfg.num_layers)) {
    total = checked_add(
        total,
        reserve_layer_layout(
            cfg.mode,
            /*seq_len=*/1,
            /*batch=*/1,
            cfg.hidden_size,
            cfg.proj_size,
            cfg.has_proj,
            cfg.num_directions,
            layer == cfg.num_layers - 1,
            cfg.uses_dropout(),
            cfg.op_name)
            .size(),
        cfg.op_name);
  }
  return total;
}

int64_t reserve_numel(const RNNConfig& cfg) {
  return checked_mul(
      checked_mul(cfg.seq_len, cfg.batch, cfg.op_name),
      reserve_numel_per_position(cfg),
      cfg.op_name);
}

c10::SymInt reserve_numel(const SymbolicRNNConfig& sym) {
  return sym.seq_len * sym.batch * reserve_numel_per_position(sym.cfg);
}

int64_t checked_mul(int64_t a, int64_t b, const std::string& op) {
  int64_t product = 0;
  TORCH_CHECK(
      !c10::mul_overflows(a, b, &product),
      op,
      ": the reserve size overflows int64 (",
      a,
      " * ",
      b,
      "); the sizes are too large");
  return product;
}

int64_t checked_add(int64_t a, int64_t b, const std::string& op) {
  int64_t sum = 0;
  TORCH_CHECK(
      !c10::add_overflows(a, b, &sum),
      op,
      ": the reserve size overflows int64 (",
      a,
      " + ",
      b,
      "); the sizes are too large");
  return sum;
}

} // namespace deeprnn
