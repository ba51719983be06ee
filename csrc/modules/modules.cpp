// The deeprnn modules: parameter bookkeeping in torch::nn's layout, and the
// unbatched-input and PackedSequence handling that the operators leave to
// their callers. The recurrence is the operators' business: forward only
// reshapes and calls deeprnn::lstm / gru / rnn_tanh / rnn_relu through the
// dispatcher.

#include <deeprnn/modules.h>
#include <deeprnn/ops.h>

#include <torch/nn/module.h>
#include <torch/nn/utils/rnn.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>
#include <cmath>
#include <ios>
#include <string>
#include <utility>

namespace deeprnn {
namespace {

// What the three modules have in common, read off their own options types so
// that the helpers below are written once.
struct RecurrentConfig {
  const char* module_name; // as users see it in errors: "deeprnn::LSTM"
  int64_t gate_count; // 4 LSTM, 3 GRU, 1 RNN
  int64_t input_size;
  int64_t hidden_size;
  int64_t num_layers;
  int64_t proj_size; // 0 outside LSTM
  bool bias;
  bool batch_first;
  double dropout;
  bool bidirectional;
};

RecurrentConfig config_of(const RNNOptions& options) {
  return {
      "deeprnn::RNN",
      1,
      options.input_size(),
      options.hidden_size(),
      options.num_layers(),
      0,
      options.bias(),
      options.batch_first(),
      options.dropout(),
      options.bidirectional()};
}

RecurrentConfig config_of(const GRUOptions& options) {
  return {
      "deeprnn::GRU",
      3,
      options.input_size(),
      options.hidden_size(),
      options.num_layers(),
      0,
      options.bias(),
      options.batch_first(),
      options.dropout(),
      options.bidirectional()};
}

RecurrentConfig config_of(const LSTMOptions& options) {
  return {
      "deeprnn::LSTM",
      4,
      options.input_size(),
      options.hidden_size(),
      options.num_layers(),
      options.proj_size(),
      options.bias(),
      options.batch_first(),
      options.dropout(),
      options.bidirectional()};
}

// Fails at construction rather than at the first forward, so a bad
// configuration is reported where it was written.
void check_options(const RecurrentConfig& config) {
  const char* name = config.module_name;
  TORCH_CHECK(
      config.input_size >= 0,
      name,
      ": input_size must be >= 0, got ",
      config.input_size);
  TORCH_CHECK(
      config.hidden_size > 0,
      name,
      ": hidden_size must be > 0, got ",
      config.hidden_size);
  TORCH_CHECK(
      config.num_layers >= 1,
      name,
      ": num_layers must be >= 1, got ",
      config.num_layers);
  // Written so that NaN fails too.
  TORCH_CHECK(
      config.dropout >= 0.0 && config.dropout <= 1.0,
      name,
      ": dropout must be in [0, 1], got ",
      config.dropout);
  TORCH_CHECK(
      config.proj_size >= 0 && config.proj_size < config.hidden_size,
      name,
      ": proj_size must be >= 0 and smaller than hidden_size (",
      config.hidden_size,
      "), got ",
      config.proj_size);
  // The largest weight, gate_count*hidden_size rows by the widest layer
  // input, must have a size that int64 holds: absurd sizes fail here, by
  // name, instead of wrapping around into a negative shape.
  const int64_t out_width =
      config.proj_size > 0 ? config.proj_size : config.hidden_size;
  int64_t upper_input = 0, rows = 0, numel = 0; // upper: D*P, layers > 0
  const bool fits =
      !c10::mul_overflows(
          int64_t{config.bidirectional ? 2 : 1}, out_width, &upper_input) &&
      !c10::mul_overflows(config.gate_count, config.hidden_size, &rows) &&
      !c10::mul_overflows(
          rows, std::max({config.input_size, upper_input, out_width}), &numel);
  TORCH_CHECK(
      fits,
      name,
      ": the weights of input_size ",
      config.input_size,
      " and hidden_size ",
      config.hidden_size,
      " would have more elements than int64 can count");
  if (config.dropout > 0.0 && config.num_layers == 1) {
    TORCH_WARN(
        name,
        ": dropout is applied between layers only, so dropout=",
        config.dropout,
        " has no effect with num_layers=1");
  }
}

// Registers the parameters exactly as torch::nn does (names, order, shapes),
// so that checkpoints move between the two unchanged. Returns their names in
// that order, which is also the order the operators expect.
std::vector<std::string> register_recurrent_parameters(
    torch::nn::Module& module,
    const RecurrentConfig& config) {
  const int64_t num_directions = config.bidirectional ? 2 : 1;
  const int64_t gate_size = config.gate_count * config.hidden_size;
  const int64_t real_hidden_size =
      config.proj_size > 0 ? config.proj_size : config.hidden_size;

  std::vector<std::string> names;
  const auto add = [&](const std::string& name, torch::Tensor tensor) {
    module.register_parameter(name, std::move(tensor));
    names.push_back(name);
  };
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const int64_t layer_input_size =
        layer == 0 ? config.input_size : real_hidden_size * num_directions;
    for (int64_t direction = 0; direction < num_directions; ++direction) {
      const std::string suffix =
          "_l" + std::to_string(layer) + (direction == 1 ? "_reverse" : "");
      add("weight_ih" + suffix, torch::empty({gate_size, layer_input_size}));
      add("weight_hh" + suffix, torch::empty({gate_size, real_hidden_size}));
      if (config.bias) {
        add("bias_ih" + suffix, torch::empty({gate_size}));
        add("bias_hh" + suffix, torch::empty({gate_size}));
      }
      if (config.proj_size > 0) {
        add("weight_hr" + suffix,
            torch::empty({config.proj_size, config.hidden_size}));
      }
    }
  }
  return names;
}

void reset_recurrent_parameters(
    torch::nn::Module& module,
    int64_t hidden_size) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden_size));
  torch::NoGradGuard no_grad;
  for (auto& parameter : module.parameters(/*recurse=*/false)) {
    parameter.uniform_(-bound, bound);
  }
}

// Looked up by name on every call rather than cached: Module::to, load and
// clone may swap what a name refers to, and the lookup is negligible next to
// a recurrent forward.
std::vector<torch::Tensor> parameters_by_name(
    const torch::nn::Module& module,
    const std::vector<std::string>& names) {
  const auto named = module.named_parameters(/*recurse=*/false);
  std::vector<torch::Tensor> result;
  result.reserve(names.size());
  for (const auto& name : names) {
    result.push_back(named[name]);
  }
  return result;
}

void print_common_options(std::ostream& stream, const RecurrentConfig& config) {
  stream << "input_size=" << config.input_size
         << ", hidden_size=" << config.hidden_size
         << ", num_layers=" << config.num_layers;
}

void print_trailing_options(
    std::ostream& stream,
    const RecurrentConfig& config) {
  const auto flags = stream.flags();
  stream << std::boolalpha << ", bias=" << config.bias
         << ", batch_first=" << config.batch_first
         << ", dropout=" << config.dropout
         << ", bidirectional=" << config.bidirectional;
  stream.flags(flags);
}

// The operators take 3-D input only; torch::nn also accepts one unbatched
// sequence (2-D input, states without their batch dimension). These two
// helpers add the batch dimension of size 1 and take it away again.
struct BatchedView {
  torch::Tensor input;
  bool is_batched;
  int64_t batch_dim;
};

BatchedView to_batched(
    const RecurrentConfig& config,
    const torch::Tensor& input) {
  TORCH_CHECK(input.defined(), config.module_name, ": input is undefined");
  TORCH_CHECK(
      input.dim() == 2 || input.dim() == 3,
      config.module_name,
      ": expected 2-D (unbatched) or 3-D (batched) input, got a ",
      input.dim(),
      "-D tensor");
  const bool is_batched = input.dim() == 3;
  const int64_t batch_dim = config.batch_first ? 0 : 1;
  return {
      is_batched ? input : input.unsqueeze(batch_dim), is_batched, batch_dim};
}

// Rank check of a user-given state: a state of the wrong rank for the input
// would otherwise be reported by the operator in terms of the batched shape
// that the user never wrote.
void check_state_rank(
    const RecurrentConfig& config,
    const BatchedView& view,
    const char* state_name,
    const torch::Tensor& state) {
  const int64_t expected_dim = view.is_batched ? 3 : 2;
  TORCH_CHECK(
      state.dim() == expected_dim,
      config.module_name,
      ": for ",
      view.is_batched ? "batched 3-D" : "unbatched 2-D",
      " input, ",
      state_name,
      " must be ",
      expected_dim,
      "-D, got a ",
      state.dim(),
      "-D tensor");
}

// The operators take lengths as an optional tensor; the modules, like
// torch::nn's hx, as a possibly undefined one, which AnyModule can pass on
// without the caller spelling out the optional type. The operators check the
// values (dtype, shape, range); only what they cannot know is checked here.
std::optional<torch::Tensor> lengths_for_op(
    const RecurrentConfig& config,
    const BatchedView& view,
    const torch::Tensor& lengths) {
  if (!lengths.defined()) {
    return std::nullopt;
  }
  TORCH_CHECK(
      view.is_batched,
      config.module_name,
      ": lengths needs batched 3-D input, got unbatched 2-D input; a single "
      "sequence has one length, so slice the input to it instead");
  return lengths;
}

// A PackedSequence as the operators take it: padded, time-major and in the
// packed (sorted, longest first) batch order, whose lengths descend, so the
// operators need no permutation of their own.
//
// The moves between the two layouts are one index_copy in and one
// index_select out, each with a one-kernel backward.
// at::_pad_packed_sequence copies step by step into slices of one tensor,
// which autograd records as one node per step; with it, forward plus
// backward of a packed LSTM took about 1.7x as long as forward(input, hx,
// lengths) on the same batch, with these two the same.
struct UnpackedInput {
  torch::Tensor padded; // (T, B, input_size), sorted order, zero padding
  torch::Tensor lengths; // (B) int64 on the CPU, descending
  // (sum of lengths) int64 on the data's device: row n of the packed data is
  // row padded_rows[n] = t * B + b of padded viewed as (T * B, features).
  torch::Tensor padded_rows;
};

UnpackedInput unpack_sorted(
    const RecurrentConfig& config,
    const torch::nn::utils::rnn::PackedSequence& packed) {
  const char* name = config.module_name;
  const torch::Tensor& data = packed.data();
  const torch::Tensor& batch_sizes = packed.batch_sizes();
  TORCH_CHECK(
      data.defined() && batch_sizes.defined(),
      name,
      ": packed_input must hold defined data and batch_sizes");
  TORCH_CHECK(
      data.dim() == 2,
      name,
      ": packed_input.data must be 2-D (sum of lengths, input_size), got a ",
      data.dim(),
      "-D tensor");
  TORCH_CHECK(
      batch_sizes.dim() == 1 && batch_sizes.numel() > 0 &&
          batch_sizes.device().is_cpu() &&
          batch_sizes.scalar_type() == torch::kLong,
      name,
      ": packed_input.batch_sizes must be a non-empty 1-D int64 tensor on "
      "the CPU, got shape ",
      batch_sizes.sizes(),
      ", ",
      batch_sizes.scalar_type(),
      " on ",
      batch_sizes.device());
  const int64_t steps = batch_sizes.size(0);
  const torch::Tensor sizes = batch_sizes.contiguous();
  const int64_t* size_at = sizes.const_data_ptr<int64_t>();
  const int64_t batch = size_at[0];
  // A PackedSequence made by torch::nn::utils::rnn always passes; one built
  // by hand might not, and would otherwise fail inside index_copy.
  int64_t rows = 0;
  for (int64_t t = 0; t < steps; ++t) {
    TORCH_CHECK(
        size_at[t] >= 1 && size_at[t] <= (t == 0 ? batch : size_at[t - 1]),
        name,
        ": packed_input.batch_sizes must be positive and non-increasing, got "
        "batch_sizes[",
        t,
        "] = ",
        size_at[t],
        t == 0 ? "" : " after ",
        t == 0 ? "" : std::to_string(size_at[t - 1]));
    rows += size_at[t];
  }
  TORCH_CHECK(
      rows == data.size(0),
      name,
      ": packed_input.data must have sum(batch_sizes) = ",
      rows,
      " rows, got ",
      data.size(0));

  torch::Tensor lengths = torch::zeros({batch}, torch::kLong);
  torch::Tensor padded_rows = torch::empty({rows}, torch::kLong);
  int64_t* length_at = lengths.mutable_data_ptr<int64_t>();
  int64_t* row_at = padded_rows.mutable_data_ptr<int64_t>();
  for (int64_t t = 0; t < steps; ++t) {
    for (int64_t b = 0; b < size_at[t]; ++b) {
      *row_at++ = t * batch + b;
      ++length_at[b];
    }
  }
  padded_rows = padded_rows.to(data.device());
  torch::Tensor padded =
      torch::zeros({steps * batch, data.size(1)}, data.options())
          .index_copy(0, padded_rows, data)
          .view({steps, batch, data.size(1)});
  return {std::move(padded), std::move(lengths), std::move(padded_rows)};
}

// output: (T, B, features) in the packed order; packed again with the
// input's own batch_sizes and indices, so that the result pairs with it.
torch::nn::utils::rnn::PackedSequence repack(
    const torch::Tensor& output,
    const UnpackedInput& unpacked,
    const torch::nn::utils::rnn::PackedSequence& like) {
  torch::Tensor data = output.reshape({-1, output.size(2)})
                           .index_select(0, unpacked.padded_rows);
  return torch::nn::utils::rnn::PackedSequence(
      std::move(data),
      like.batch_sizes(),
      like.sorted_indices(),
      like.unsorted_indices());
}

// Moves the batch dimension (1) of a state between the user's order and the
// packed one; an undefined permutation means the input was packed sorted.
torch::Tensor permute_batch(
    const torch::Tensor& state,
    const torch::Tensor& permutation) {
  return permutation.defined() ? state.index_select(1, permutation) : state;
}

// Checked here, not left to the operator: the state is permuted into the
// packed order before the operator sees it, and a wrong batch size would
// fail inside that permutation with a message that names neither.
void check_packed_state(
    const RecurrentConfig& config,
    const char* state_name,
    const torch::Tensor& state,
    int64_t num_sequences) {
  TORCH_CHECK(
      state.dim() == 3,
      config.module_name,
      ": with packed input, ",
      state_name,
      " must be 3-D (num_layers * num_directions, batch, features), got a ",
      state.dim(),
      "-D tensor");
  TORCH_CHECK(
      state.size(1) == num_sequences,
      config.module_name,
      ": with packed input, ",
      state_name,
      " must have batch size ",
      num_sequences,
      " (the number of packed sequences) in dim 1, got shape ",
      state.sizes());
}

void check_lstm_state_defined(
    const RecurrentConfig& config,
    const torch::Tensor& h0,
    const torch::Tensor& c0) {
  TORCH_CHECK(
      h0.defined() && c0.defined(),
      config.module_name,
      ": the initial state (h_0, c_0) must hold two defined tensors; ",
      "pass no state at all for zeros");
}

using SingleStateOp = std::tuple<at::Tensor, at::Tensor> (*)(
    const at::Tensor&,
    const std::optional<at::Tensor>&,
    at::TensorList,
    bool,
    int64_t,
    double,
    bool,
    bool,
    bool,
    const std::optional<at::Tensor>&);

// forward of RNN and GRU, whose only state is h.
std::tuple<torch::Tensor, torch::Tensor> single_state_forward(
    SingleStateOp op,
    const RecurrentConfig& config,
    const std::vector<torch::Tensor>& params,
    bool train,
    const torch::Tensor& input,
    torch::Tensor hx,
    const torch::Tensor& lengths) {
  const BatchedView view = to_batched(config, input);
  const std::optional<torch::Tensor> lengths_opt =
      lengths_for_op(config, view, lengths);
  std::optional<torch::Tensor> hx_opt;
  if (hx.defined()) {
    check_state_rank(config, view, "hx", hx);
    hx_opt = view.is_batched ? hx : hx.unsqueeze(1);
  }
  auto [output, hy] =
      op(view.input,
         hx_opt,
         params,
         config.bias,
         config.num_layers,
         config.dropout,
         train,
         config.bidirectional,
         config.batch_first,
         lengths_opt);
  if (!view.is_batched) {
    output = output.squeeze(view.batch_dim);
    hy = hy.squeeze(1);
  }
  return std::make_tuple(std::move(output), std::move(hy));
}

// forward_with_packed_input of RNN and GRU.
std::tuple<torch::nn::utils::rnn::PackedSequence, torch::Tensor>
single_state_packed_forward(
    SingleStateOp op,
    const RecurrentConfig& config,
    const std::vector<torch::Tensor>& params,
    bool train,
    const torch::nn::utils::rnn::PackedSequence& packed_input,
    const torch::Tensor& hx) {
  const UnpackedInput unpacked = unpack_sorted(config, packed_input);
  std::optional<torch::Tensor> hx_sorted;
  if (hx.defined()) {
    check_packed_state(config, "hx", hx, unpacked.padded.size(1));
    hx_sorted = permute_batch(hx, packed_input.sorted_indices());
  }
  auto [output, hy] =
      op(unpacked.padded,
         hx_sorted,
         params,
         config.bias,
         config.num_layers,
         config.dropout,
         train,
         config.bidirectional,
         /*batch_first=*/false,
         unpacked.lengths);
  return std::make_tuple(
      repack(output, unpacked, packed_input),
      permute_batch(hy, packed_input.unsorted_indices()));
}

} // namespace

// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ RNN ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

RNNImpl::RNNImpl(const RNNOptions& options_) : options(options_) {
  reset();
}

void RNNImpl::reset() {
  const RecurrentConfig config = config_of(options);
  check_options(config);
  flat_weights_names_ = register_recurrent_parameters(*this, config);
  reset_parameters();
}

void RNNImpl::reset_parameters() {
  reset_recurrent_parameters(*this, options.hidden_size());
}

void RNNImpl::pretty_print(std::ostream& stream) const {
  const RecurrentConfig config = config_of(options);
  const bool is_relu =
      std::holds_alternative<torch::enumtype::kReLU>(options.nonlinearity());
  stream << "deeprnn::RNN(";
  print_common_options(stream, config);
  stream << ", nonlinearity=" << (is_relu ? "kReLU" : "kTanh");
  print_trailing_options(stream, config);
  stream << ")";
}

std::vector<torch::Tensor> RNNImpl::all_weights() const {
  return flat_weights();
}

std::vector<torch::Tensor> RNNImpl::flat_weights() const {
  return parameters_by_name(*this, flat_weights_names_);
}

std::tuple<torch::Tensor, torch::Tensor> RNNImpl::forward(
    const torch::Tensor& input,
    torch::Tensor hx,
    const torch::Tensor& lengths) {
  const bool is_relu =
      std::holds_alternative<torch::enumtype::kReLU>(options.nonlinearity());
  return single_state_forward(
      is_relu ? &deeprnn::rnn_relu : &deeprnn::rnn_tanh,
      config_of(options),
      flat_weights(),
      is_training(),
      input,
      std::move(hx),
      lengths);
}

std::tuple<torch::nn::utils::rnn::PackedSequence, torch::Tensor> RNNImpl::
    forward_with_packed_input(
        const torch::nn::utils::rnn::PackedSequence& packed_input,
        torch::Tensor hx) {
  const bool is_relu =
      std::holds_alternative<torch::enumtype::kReLU>(options.nonlinearity());
  return single_state_packed_forward(
      is_relu ? &deeprnn::rnn_relu : &deeprnn::rnn_tanh,
      config_of(options),
      flat_weights(),
      is_training(),
      packed_input,
      hx);
}

// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ GRU ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

GRUImpl::GRUImpl(const GRUOptions& options_) : options(options_) {
  reset();
}

void GRUImpl::reset() {
  const RecurrentConfig config = config_of(options);
  check_options(config);
  flat_weights_names_ = register_recurrent_parameters(*this, config);
  reset_parameters();
}

void GRUImpl::reset_parameters() {
  reset_recurrent_parameters(*this, options.hidden_size());
}

void GRUImpl::pretty_print(std::ostream& stream) const {
  const RecurrentConfig config = config_of(options);
  stream << "deeprnn::GRU(";
  print_common_options(stream, config);
  print_trailing_options(stream, config);
  stream << ")";
}

std::vector<torch::Tensor> GRUImpl::all_weights() const {
  return flat_weights();
}

std::vector<torch::Tensor> GRUImpl::flat_weights() const {
  return parameters_by_name(*this, flat_weights_names_);
}

std::tuple<torch::Tensor, torch::Tensor> GRUImpl::forward(
    const torch::Tensor& input,
    torch::Tensor hx,
    const torch::Tensor& lengths) {
  return single_state_forward(
      &deeprnn::gru,
      config_of(options),
      flat_weights(),
      is_training(),
      input,
      std::move(hx),
      lengths);
}

std::tuple<torch::nn::utils::rnn::PackedSequence, torch::Tensor> GRUImpl::
    forward_with_packed_input(
        const torch::nn::utils::rnn::PackedSequence& packed_input,
        torch::Tensor hx) {
  return single_state_packed_forward(
      &deeprnn::gru,
      config_of(options),
      flat_weights(),
      is_training(),
      packed_input,
      hx);
}

// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ LSTM ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

LSTMImpl::LSTMImpl(const LSTMOptions& options_) : options(options_) {
  reset();
}

void LSTMImpl::reset() {
  const RecurrentConfig config = config_of(options);
  check_options(config);
  flat_weights_names_ = register_recurrent_parameters(*this, config);
  reset_parameters();
}

void LSTMImpl::reset_parameters() {
  reset_recurrent_parameters(*this, options.hidden_size());
}

void LSTMImpl::pretty_print(std::ostream& stream) const {
  const RecurrentConfig config = config_of(options);
  stream << "deeprnn::LSTM(";
  print_common_options(stream, config);
  print_trailing_options(stream, config);
  stream << ", proj_size=" << options.proj_size() << ")";
}

std::vector<torch::Tensor> LSTMImpl::all_weights() const {
  return flat_weights();
}

std::vector<torch::Tensor> LSTMImpl::flat_weights() const {
  return parameters_by_name(*this, flat_weights_names_);
}

std::tuple<torch::Tensor, std::tuple<torch::Tensor, torch::Tensor>> LSTMImpl::
    forward(
        const torch::Tensor& input,
        std::optional<std::tuple<torch::Tensor, torch::Tensor>> hx_opt,
        const torch::Tensor& lengths) {
  const RecurrentConfig config = config_of(options);
  const BatchedView view = to_batched(config, input);
  const std::optional<torch::Tensor> lengths_opt =
      lengths_for_op(config, view, lengths);
  std::optional<torch::Tensor> hx;
  std::optional<torch::Tensor> cx;
  if (hx_opt.has_value()) {
    const auto& [h0, c0] = *hx_opt;
    check_lstm_state_defined(config, h0, c0);
    check_state_rank(config, view, "h_0", h0);
    check_state_rank(config, view, "c_0", c0);
    hx = view.is_batched ? h0 : h0.unsqueeze(1);
    cx = view.is_batched ? c0 : c0.unsqueeze(1);
  }
  auto [output, hy, cy] = deeprnn::lstm(
      view.input,
      hx,
      cx,
      flat_weights(),
      config.bias,
      config.num_layers,
      config.dropout,
      is_training(),
      config.bidirectional,
      config.batch_first,
      lengths_opt);
  if (!view.is_batched) {
    output = output.squeeze(view.batch_dim);
    hy = hy.squeeze(1);
    cy = cy.squeeze(1);
  }
  return std::make_tuple(
      std::move(output), std::make_tuple(std::move(hy), std::move(cy)));
}

std::tuple<
    torch::nn::utils::rnn::PackedSequence,
    std::tuple<torch::Tensor, torch::Tensor>>
LSTMImpl::forward_with_packed_input(
    const torch::nn::utils::rnn::PackedSequence& packed_input,
    std::optional<std::tuple<torch::Tensor, torch::Tensor>> hx_opt) {
  const RecurrentConfig config = config_of(options);
  const UnpackedInput unpacked = unpack_sorted(config, packed_input);
  std::optional<torch::Tensor> hx;
  std::optional<torch::Tensor> cx;
  if (hx_opt.has_value()) {
    const auto& [h0, c0] = *hx_opt;
    check_lstm_state_defined(config, h0, c0);
    check_packed_state(config, "h_0", h0, unpacked.padded.size(1));
    check_packed_state(config, "c_0", c0, unpacked.padded.size(1));
    hx = permute_batch(h0, packed_input.sorted_indices());
    cx = permute_batch(c0, packed_input.sorted_indices());
  }
  auto [output, hy, cy] = deeprnn::lstm(
      unpacked.padded,
      hx,
      cx,
      flat_weights(),
      config.bias,
      config.num_layers,
      config.dropout,
      is_training(),
      config.bidirectional,
      /*batch_first=*/false,
      unpacked.lengths);
  const torch::Tensor& unsorted_indices = packed_input.unsorted_indices();
  return std::make_tuple(
      repack(output, unpacked, packed_input),
      std::make_tuple(
          permute_batch(hy, unsorted_indices),
          permute_batch(cy, unsorted_indices)));
}

} // namespace deeprnn
