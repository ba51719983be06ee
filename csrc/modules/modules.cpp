// The deeprnn modules: parameter bookkeeping in torch::nn's layout, and the
// unbatched-input and PackedSequence handling that the operators leave to
// their callers. The recurrence is the operators' business: forward only
// reshapes and calls deeprnn::lstm / gru / rnn_tanh / rnn_relu through the
// dispatcher, once for the whole stack when the layers are alike and merge
// by concatenation (torch::nn's case), else once per layer, merging the two
// directions of each layer in between.

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
#include <sstream>
#include <string>
#include <utility>

namespace deeprnn {

std::ostream& operator<<(std::ostream& stream, MergeMode mode) {
  switch (mode) {
    case MergeMode::kConcat:
      return stream << "kConcat";
    case MergeMode::kSum:
      return stream << "kSum";
    case MergeMode::kMul:
      return stream << "kMul";
    case MergeMode::kAve:
      return stream << "kAve";
  }
  // An enum class can still hold a value outside its enumerators.
  return stream << "MergeMode(" << static_cast<int>(mode) << ")";
}

namespace {

// What the three modules have in common, read off their own options types so
// that the helpers below are written once.
struct RecurrentConfig {
  const char* module_name; // as users see it in errors: "deeprnn::LSTM"
  int64_t gate_count; // 4 LSTM, 3 GRU, 1 RNN
  int64_t input_size;
  int64_t hidden_size;
  std::vector<int64_t> hidden_sizes; // as set: empty = hidden_size each layer
  int64_t num_layers;
  int64_t proj_size; // 0 outside LSTM
  std::vector<int64_t> proj_sizes; // as set: empty = proj_size each layer
  bool bias;
  bool batch_first;
  double dropout;
  bool bidirectional;
  MergeMode merge_mode;
  bool return_sequences;

  // Valid once check_options has passed.
  int64_t num_directions() const {
    return bidirectional ? 2 : 1;
  }
  int64_t hidden_of(int64_t layer) const {
    return hidden_sizes.empty() ? hidden_size : hidden_sizes[layer];
  }
  int64_t proj_of(int64_t layer) const {
    return proj_sizes.empty() ? proj_size : proj_sizes[layer];
  }
  // Features of one direction of the layer's output (and of its h).
  int64_t output_of(int64_t layer) const {
    return proj_of(layer) > 0 ? proj_of(layer) : hidden_of(layer);
  }
  // Features of the layer's output once its directions are merged.
  int64_t merged_of(int64_t layer) const {
    return merge_mode == MergeMode::kConcat
        ? num_directions() * output_of(layer)
        : output_of(layer);
  }
  int64_t input_of(int64_t layer) const {
    return layer == 0 ? input_size : merged_of(layer - 1);
  }
  // Every layer alike: the states stack into one tensor.
  bool uniform() const {
    for (int64_t layer = 1; layer < num_layers; ++layer) {
      if (hidden_of(layer) != hidden_of(0) || proj_of(layer) != proj_of(0)) {
        return false;
      }
    }
    return true;
  }
  // torch::nn's own configuration: one operator call runs the whole stack.
  bool fused() const {
    return uniform() && merge_mode == MergeMode::kConcat;
  }
};

RecurrentConfig config_of(const RNNOptions& options) {
  return {
      "deeprnn::RNN",
      1,
      options.input_size(),
      options.hidden_size(),
      options.hidden_sizes(),
      options.num_layers(),
      0,
      {},
      options.bias(),
      options.batch_first(),
      options.dropout(),
      options.bidirectional(),
      options.merge_mode(),
      options.return_sequences()};
}

RecurrentConfig config_of(const GRUOptions& options) {
  return {
      "deeprnn::GRU",
      3,
      options.input_size(),
      options.hidden_size(),
      options.hidden_sizes(),
      options.num_layers(),
      0,
      {},
      options.bias(),
      options.batch_first(),
      options.dropout(),
      options.bidirectional(),
      options.merge_mode(),
      options.return_sequences()};
}

RecurrentConfig config_of(const LSTMOptions& options) {
  return {
      "deeprnn::LSTM",
      4,
      options.input_size(),
      options.hidden_size(),
      options.hidden_sizes(),
      options.num_layers(),
      options.proj_size(),
      options.proj_sizes(),
      options.bias(),
      options.batch_first(),
      options.dropout(),
      options.bidirectional(),
      options.merge_mode(),
      options.return_sequences()};
}

std::string list_str(const std::vector<int64_t>& values) {
  std::ostringstream stream;
  stream << "[";
  for (size_t i = 0; i < values.size(); ++i) {
    stream << (i == 0 ? "" : ", ") << values[i];
  }
  stream << "]";
  return stream.str();
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
  if (config.hidden_sizes.empty()) {
    TORCH_CHECK(
        config.hidden_size > 0,
        name,
        ": hidden_size must be > 0, got ",
        config.hidden_size);
  }
  TORCH_CHECK(
      config.num_layers >= 1,
      name,
      ": num_layers must be >= 1, got ",
      config.num_layers);
  if (!config.hidden_sizes.empty()) {
    TORCH_CHECK(
        static_cast<int64_t>(config.hidden_sizes.size()) == config.num_layers,
        name,
        ": hidden_sizes must have one entry per layer (num_layers=",
        config.num_layers,
        "), got ",
        config.hidden_sizes.size(),
        ": ",
        list_str(config.hidden_sizes));
    for (size_t layer = 0; layer < config.hidden_sizes.size(); ++layer) {
      TORCH_CHECK(
          config.hidden_sizes[layer] > 0,
          name,
          ": hidden_sizes[",
          layer,
          "] must be > 0, got ",
          config.hidden_sizes[layer]);
    }
  }
  // Written so that NaN fails too.
  TORCH_CHECK(
      config.dropout >= 0.0 && config.dropout <= 1.0,
      name,
      ": dropout must be in [0, 1], got ",
      config.dropout);
  if (!config.proj_sizes.empty()) {
    TORCH_CHECK(
        static_cast<int64_t>(config.proj_sizes.size()) == config.num_layers,
        name,
        ": proj_sizes must have one entry per layer (num_layers=",
        config.num_layers,
        "), got ",
        config.proj_sizes.size(),
        ": ",
        list_str(config.proj_sizes));
  }
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const int64_t proj = config.proj_of(layer);
    const int64_t hidden = config.hidden_of(layer);
    if (config.proj_sizes.empty() && config.hidden_sizes.empty()) {
      TORCH_CHECK(
          proj >= 0 && proj < hidden,
          name,
          ": proj_size must be >= 0 and smaller than hidden_size (",
          hidden,
          "), got ",
          proj);
    } else if (config.proj_sizes.empty()) {
      TORCH_CHECK(
          proj >= 0 && proj < hidden,
          name,
          ": proj_size=",
          proj,
          " must be >= 0 and smaller than every layer's hidden size, got "
          "hidden_sizes[",
          layer,
          "]=",
          hidden);
    } else {
      TORCH_CHECK(
          proj >= 0 && proj < hidden,
          name,
          ": proj_sizes[",
          layer,
          "] must be >= 0 and smaller than the layer's hidden size (",
          hidden,
          "), got ",
          proj);
    }
  }
  const bool known_merge = config.merge_mode == MergeMode::kConcat ||
      config.merge_mode == MergeMode::kSum ||
      config.merge_mode == MergeMode::kMul ||
      config.merge_mode == MergeMode::kAve;
  TORCH_CHECK(
      known_merge,
      name,
      ": merge_mode must be kConcat, kSum, kMul or kAve, got ",
      config.merge_mode);
  TORCH_CHECK(
      config.merge_mode == MergeMode::kConcat || config.bidirectional,
      name,
      ": merge_mode=",
      config.merge_mode,
      " combines the two directions of a layer and needs bidirectional=true, "
      "got bidirectional=false");
  // The largest weight of each layer, gate_count*hidden rows by the widest
  // of its input and output, must have a size that int64 holds: absurd sizes
  // fail here, by name, instead of wrapping around into a negative shape.
  int64_t layer_input = config.input_size;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const int64_t hidden = config.hidden_of(layer);
    const int64_t out_width = config.output_of(layer);
    int64_t merged = 0, rows = 0, numel = 0;
    const bool fits =
        !c10::mul_overflows(
            config.merge_mode == MergeMode::kConcat ? config.num_directions()
                                                    : int64_t{1},
            out_width,
            &merged) &&
        !c10::mul_overflows(config.gate_count, hidden, &rows) &&
        !c10::mul_overflows(
            rows, std::max({layer_input, merged, out_width}), &numel);
    TORCH_CHECK(
        fits,
        name,
        ": the weights of input_size ",
        layer_input,
        " and hidden_size ",
        hidden,
        config.num_layers > 1 ? " (layer " : "",
        config.num_layers > 1 ? std::to_string(layer) : std::string(),
        config.num_layers > 1 ? ")" : "",
        " would have more elements than int64 can count");
    layer_input = merged;
  }
  if (config.dropout > 0.0 && config.num_layers == 1) {
    TORCH_WARN(
        name,
        ": dropout is applied between layers only, so dropout=",
        config.dropout,
        " has no effect with num_layers=1");
  }
}

struct ParameterLayout {
  std::vector<std::string> names; // flat, in torch::nn's order
  std::vector<size_t> layer_begin; // layer l: names[begin[l], begin[l + 1])
};

// Registers the parameters exactly as torch::nn does (names, order, shapes),
// so that checkpoints move between the two unchanged; with per-layer sizes,
// each layer's shapes follow its own sizes and the merged width of the layer
// below. The names come back in that order, which is also the order the
// operators expect.
ParameterLayout register_recurrent_parameters(
    torch::nn::Module& module,
    const RecurrentConfig& config) {
  ParameterLayout layout;
  const auto add = [&](const std::string& name, torch::Tensor tensor) {
    module.register_parameter(name, std::move(tensor));
    layout.names.push_back(name);
  };
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    layout.layer_begin.push_back(layout.names.size());
    const int64_t hidden = config.hidden_of(layer);
    const int64_t gate_size = config.gate_count * hidden;
    const int64_t out_width = config.output_of(layer);
    const int64_t layer_input_size = config.input_of(layer);
    for (int64_t direction = 0; direction < config.num_directions();
         ++direction) {
      const std::string suffix =
          "_l" + std::to_string(layer) + (direction == 1 ? "_reverse" : "");
      add("weight_ih" + suffix, torch::empty({gate_size, layer_input_size}));
      add("weight_hh" + suffix, torch::empty({gate_size, out_width}));
      if (config.bias) {
        add("bias_ih" + suffix, torch::empty({gate_size}));
        add("bias_hh" + suffix, torch::empty({gate_size}));
      }
      if (config.proj_of(layer) > 0) {
        add("weight_hr" + suffix, torch::empty({out_width, hidden}));
      }
    }
  }
  layout.layer_begin.push_back(layout.names.size());
  return layout;
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

// In registration order, so that uniform sizes draw exactly the numbers
// they drew before sizes could differ per layer. Each layer's bound comes
// from its own hidden size, read off its weight_hh (gate_count * H_l rows,
// second in the layer) rather than off the options, which may have been
// edited since reset() shaped the parameters.
void reset_recurrent_parameters(
    torch::nn::Module& module,
    int64_t gate_count,
    const std::vector<std::string>& names,
    const std::vector<size_t>& layer_begin) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parameters = parameters_by_name(module, names);
  for (size_t layer = 0; layer + 1 < layer_begin.size(); ++layer) {
    const int64_t hidden =
        parameters[layer_begin[layer] + 1].size(0) / gate_count;
    const double bound = 1.0 / std::sqrt(static_cast<double>(hidden));
    for (size_t i = layer_begin[layer]; i < layer_begin[layer + 1]; ++i) {
      parameters[i].uniform_(-bound, bound);
    }
  }
}

void print_common_options(std::ostream& stream, const RecurrentConfig& config) {
  stream << "input_size=" << config.input_size;
  if (config.hidden_sizes.empty()) {
    stream << ", hidden_size=" << config.hidden_size;
  } else {
    stream << ", hidden_sizes=" << list_str(config.hidden_sizes);
  }
  stream << ", num_layers=" << config.num_layers;
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

// Options beyond torch::nn, printed only when set, so that a module built
// as torch::nn's prints as it always did.
void print_extra_options(std::ostream& stream, const RecurrentConfig& config) {
  if (config.merge_mode != MergeMode::kConcat) {
    stream << ", merge_mode=" << config.merge_mode;
  }
  if (!config.return_sequences) {
    stream << ", return_sequences=false";
  }
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

// How a module calls its operator: deeprnn::lstm, or a single-state one (RNN,
// GRU) whose cell state comes back undefined, so that everything below is
// written once for the three modules.
struct Recurrence {
  SingleStateOp single_state; // nullptr: LSTM

  bool is_lstm() const {
    return single_state == nullptr;
  }

  // Returns (output, hy, cy).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> operator()(
      const torch::Tensor& input,
      const std::optional<torch::Tensor>& hx,
      const std::optional<torch::Tensor>& cx,
      at::TensorList params,
      const RecurrentConfig& config,
      int64_t num_layers,
      double dropout,
      bool train,
      bool batch_first,
      const std::optional<torch::Tensor>& lengths) const {
    if (is_lstm()) {
      return deeprnn::lstm(
          input,
          hx,
          cx,
          params,
          config.bias,
          num_layers,
          dropout,
          train,
          config.bidirectional,
          batch_first,
          lengths);
    }
    auto [output, hy] = single_state(
        input,
        hx,
        params,
        config.bias,
        num_layers,
        dropout,
        train,
        config.bidirectional,
        batch_first,
        lengths);
    return std::make_tuple(std::move(output), std::move(hy), torch::Tensor());
  }
};

// What a forward needs from its module, taken once per call.
struct ModuleCall {
  Recurrence recurrence;
  RecurrentConfig config;
  std::vector<torch::Tensor> params; // flat, in torch::nn's order
  std::vector<size_t> layer_begin; // layer l: params[begin[l], begin[l + 1])
  bool train;
};

template <typename Options>
ModuleCall module_call(
    const torch::nn::Module& module,
    const Options& options,
    Recurrence recurrence,
    const std::vector<std::string>& names,
    const std::vector<size_t>& layer_begin) {
  return {
      recurrence,
      config_of(options),
      parameters_by_name(module, names),
      layer_begin,
      module.is_training()};
}

// forward: (..., P), reverse: (..., P); kConcat gives (..., 2P), the others
// (..., P).
torch::Tensor merge_pair(
    const torch::Tensor& forward,
    const torch::Tensor& reverse,
    MergeMode mode) {
  switch (mode) {
    case MergeMode::kSum:
      return forward + reverse;
    case MergeMode::kMul:
      return forward * reverse;
    case MergeMode::kAve:
      return (forward + reverse) * 0.5;
    case MergeMode::kConcat:
      break;
  }
  return torch::cat({forward, reverse}, -1);
}

// output: (..., D*P) as the operator returns it, forward half first.
torch::Tensor merge_directions(
    const torch::Tensor& output,
    const RecurrentConfig& config) {
  if (config.merge_mode == MergeMode::kConcat) {
    return output;
  }
  const int64_t width = output.size(-1) / 2;
  return merge_pair(
      output.narrow(-1, 0, width),
      output.narrow(-1, width, width),
      config.merge_mode);
}

// return_sequences=false: from the last layer's h_n (D, B, P), not from the
// output, because the reverse direction's last step is its state after
// reading the whole sequence (output step 0), and with lengths the forward
// direction's is at each sequence's own last step; h_n holds both.
torch::Tensor last_step(
    const RecurrentConfig& config,
    const torch::Tensor& last_layer_h) {
  if (config.num_directions() == 1) {
    return last_layer_h.select(0, 0);
  }
  return merge_pair(
      last_layer_h.select(0, 0), last_layer_h.select(0, 1), config.merge_mode);
}

struct LayeredResult {
  torch::Tensor output; // merged, every step
  std::vector<torch::Tensor> h; // layer l: (D, B, P_l)
  std::vector<torch::Tensor> c; // LSTM, layer l: (D, B, H_l); else empty
};

// One operator call per layer, the directions merged and dropout applied
// between layers, as the fused operator does it for concatenation.
// input: batched; h0, c0: empty (zeros) or one checked, batched tensor per
// layer.
LayeredResult run_layers(
    const ModuleCall& call,
    const torch::Tensor& input,
    bool batch_first,
    const std::vector<torch::Tensor>& h0,
    const std::vector<torch::Tensor>& c0,
    const std::optional<torch::Tensor>& lengths) {
  const RecurrentConfig& config = call.config;
  const at::TensorList params(call.params);
  LayeredResult result;
  torch::Tensor layer_input = input;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    std::optional<torch::Tensor> hx;
    std::optional<torch::Tensor> cx;
    if (!h0.empty()) {
      hx = h0[layer];
    }
    if (!c0.empty()) {
      cx = c0[layer];
    }
    const size_t begin = call.layer_begin[layer];
    auto [output, hy, cy] = call.recurrence(
        layer_input,
        hx,
        cx,
        params.slice(begin, call.layer_begin[layer + 1] - begin),
        config,
        /*num_layers=*/1,
        /*dropout=*/0.0,
        call.train,
        batch_first,
        lengths);
    output = merge_directions(output, config);
    if (layer + 1 < config.num_layers && call.train && config.dropout > 0.0) {
      output = torch::dropout(output, config.dropout, /*train=*/true);
    }
    layer_input = std::move(output);
    result.h.push_back(std::move(hy));
    if (cy.defined()) {
      result.c.push_back(std::move(cy));
    }
  }
  result.output = std::move(layer_input);
  return result;
}

// Stacked states, (L*D, B, P) and (L*D, B, H), in and out; uniform sizes
// only. torch::nn's configuration is one operator call, exactly as before
// the other options existed.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> run_stacked(
    const ModuleCall& call,
    const torch::Tensor& input,
    bool batch_first,
    const std::optional<torch::Tensor>& hx,
    const std::optional<torch::Tensor>& cx,
    const std::optional<torch::Tensor>& lengths) {
  const RecurrentConfig& config = call.config;
  if (config.fused()) {
    return call.recurrence(
        input,
        hx,
        cx,
        call.params,
        config,
        config.num_layers,
        config.dropout,
        call.train,
        batch_first,
        lengths);
  }
  const int64_t num_directions = config.num_directions();
  std::vector<torch::Tensor> h0;
  std::vector<torch::Tensor> c0;
  if (hx.has_value()) {
    h0 = hx->split(num_directions);
  }
  if (cx.has_value()) {
    c0 = cx->split(num_directions);
  }
  LayeredResult result = run_layers(call, input, batch_first, h0, c0, lengths);
  return std::make_tuple(
      std::move(result.output),
      torch::cat(result.h),
      result.c.empty() ? torch::Tensor() : torch::cat(result.c));
}

// forward and forward_with_packed_input return one stacked state tensor
// (their signatures are torch::nn's), which layers of different sizes
// cannot share.
void check_uniform_for(
    const RecurrentConfig& config,
    const char* method,
    const char* advice) {
  if (config.uniform()) {
    return;
  }
  std::vector<int64_t> hidden;
  std::vector<int64_t> proj;
  bool any_proj = false;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    hidden.push_back(config.hidden_of(layer));
    proj.push_back(config.proj_of(layer));
    any_proj = any_proj || proj.back() > 0;
  }
  TORCH_CHECK(
      false,
      config.module_name,
      ": ",
      method,
      " returns one stacked state tensor, which needs equal sizes in every "
      "layer, got hidden sizes ",
      list_str(hidden),
      any_proj ? " and proj sizes " + list_str(proj) : std::string(),
      "; ",
      advice);
}

// The whole shape of a stacked state, for the per-layer path, which splits
// it before any operator sees it. state is as the user gave it.
void check_stacked_state(
    const RecurrentConfig& config,
    const char* state_name,
    const torch::Tensor& state,
    bool is_batched,
    int64_t batch,
    int64_t width,
    const char* width_name) {
  std::vector<int64_t> expected = {config.num_layers * config.num_directions()};
  if (is_batched) {
    expected.push_back(batch);
  }
  expected.push_back(width);
  TORCH_CHECK(
      state.sizes() == torch::IntArrayRef(expected),
      config.module_name,
      ": ",
      state_name,
      " must have shape ",
      list_str(expected),
      " = (num_layers*num_directions, ",
      is_batched ? "batch, " : "",
      width_name,
      "), got ",
      state.sizes());
}

// The states of forward_layers: one tensor per layer, as the user gave them.
void check_layer_states(
    const RecurrentConfig& config,
    const BatchedView& view,
    const char* state_name,
    const std::vector<torch::Tensor>& states,
    bool cells) {
  const char* name = config.module_name;
  TORCH_CHECK(
      static_cast<int64_t>(states.size()) == config.num_layers,
      name,
      ": ",
      state_name,
      " must hold one tensor per layer (num_layers = ",
      config.num_layers,
      "), got ",
      states.size(),
      " tensors; pass none at all for zeros");
  const int64_t batch = view.input.size(view.batch_dim);
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const torch::Tensor& state = states[layer];
    TORCH_CHECK(
        state.defined(),
        name,
        ": ",
        state_name,
        "[",
        layer,
        "] is undefined; pass none at all for zeros");
    const bool projected = !cells && config.proj_of(layer) > 0;
    std::vector<int64_t> expected = {config.num_directions()};
    if (view.is_batched) {
      expected.push_back(batch);
    }
    expected.push_back(
        projected ? config.proj_of(layer) : config.hidden_of(layer));
    TORCH_CHECK(
        state.sizes() == torch::IntArrayRef(expected),
        name,
        ": ",
        state_name,
        "[",
        layer,
        "] must have shape ",
        list_str(expected),
        " = (num_directions, ",
        view.is_batched ? "batch, " : "",
        projected ? "proj" : "hidden",
        " size of layer ",
        layer,
        ") for ",
        view.is_batched ? "batched 3-D" : "unbatched 2-D",
        " input, got ",
        state.sizes());
  }
}

// forward of the three modules; h0 (and LSTM's c0) undefined means zeros.
// Returns (output, hy, cy), cy undefined outside LSTM.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> stacked_forward(
    const ModuleCall& call,
    const torch::Tensor& input,
    const torch::Tensor& h0,
    const torch::Tensor& c0,
    const torch::Tensor& lengths) {
  const RecurrentConfig& config = call.config;
  const BatchedView view = to_batched(config, input);
  const std::optional<torch::Tensor> lengths_opt =
      lengths_for_op(config, view, lengths);
  check_uniform_for(
      config,
      "forward",
      "call forward_layers(input, hx, lengths), which takes and returns one "
      "state tensor per layer");
  const bool lstm = call.recurrence.is_lstm();
  const char* h_name = lstm ? "h_0" : "hx";
  std::optional<torch::Tensor> hx;
  std::optional<torch::Tensor> cx;
  if (h0.defined()) {
    check_state_rank(config, view, h_name, h0);
    if (lstm) {
      check_state_rank(config, view, "c_0", c0);
    }
    if (!config.fused()) {
      const int64_t batch = view.input.size(view.batch_dim);
      const bool projected = config.proj_of(0) > 0;
      check_stacked_state(
          config,
          h_name,
          h0,
          view.is_batched,
          batch,
          config.output_of(0),
          projected ? "proj_size" : "hidden_size");
      if (lstm) {
        check_stacked_state(
            config,
            "c_0",
            c0,
            view.is_batched,
            batch,
            config.hidden_of(0),
            "hidden_size");
      }
    }
    hx = view.is_batched ? h0 : h0.unsqueeze(1);
    if (lstm) {
      cx = view.is_batched ? c0 : c0.unsqueeze(1);
    }
  }
  auto [output, hy, cy] =
      run_stacked(call, view.input, config.batch_first, hx, cx, lengths_opt);
  if (!config.return_sequences) {
    const int64_t num_directions = config.num_directions();
    output = last_step(
        config,
        hy.narrow(0, (config.num_layers - 1) * num_directions, num_directions));
  }
  if (!view.is_batched) {
    output = output.squeeze(config.return_sequences ? view.batch_dim : 0);
    hy = hy.squeeze(1);
    if (cy.defined()) {
      cy = cy.squeeze(1);
    }
  }
  return std::make_tuple(std::move(output), std::move(hy), std::move(cy));
}

// forward_layers of the three modules; h0 (and LSTM's c0) empty means zeros.
// Returns (output, hy, cy) with one state tensor per layer; cy empty outside
// LSTM.
std::
    tuple<torch::Tensor, std::vector<torch::Tensor>, std::vector<torch::Tensor>>
    layers_forward(
        const ModuleCall& call,
        const torch::Tensor& input,
        const std::vector<torch::Tensor>& h0,
        const std::vector<torch::Tensor>& c0,
        const torch::Tensor& lengths) {
  const RecurrentConfig& config = call.config;
  const BatchedView view = to_batched(config, input);
  const std::optional<torch::Tensor> lengths_opt =
      lengths_for_op(config, view, lengths);
  const bool lstm = call.recurrence.is_lstm();
  const bool has_state = !h0.empty() || !c0.empty();
  std::vector<torch::Tensor> hx;
  std::vector<torch::Tensor> cx;
  if (has_state) {
    check_layer_states(config, view, lstm ? "h_0" : "hx", h0, false);
    if (lstm) {
      check_layer_states(config, view, "c_0", c0, true);
    }
    for (const auto& state : h0) {
      hx.push_back(view.is_batched ? state : state.unsqueeze(1));
    }
    for (const auto& state : c0) {
      cx.push_back(view.is_batched ? state : state.unsqueeze(1));
    }
  }
  torch::Tensor output;
  std::vector<torch::Tensor> hy;
  std::vector<torch::Tensor> cy;
  if (config.fused()) {
    std::optional<torch::Tensor> hx_stacked;
    std::optional<torch::Tensor> cx_stacked;
    if (has_state) {
      hx_stacked = torch::cat(hx);
      if (lstm) {
        cx_stacked = torch::cat(cx);
      }
    }
    auto [stack_output, stack_h, stack_c] = run_stacked(
        call,
        view.input,
        config.batch_first,
        hx_stacked,
        cx_stacked,
        lengths_opt);
    output = std::move(stack_output);
    hy = stack_h.split(config.num_directions());
    if (stack_c.defined()) {
      cy = stack_c.split(config.num_directions());
    }
  } else {
    LayeredResult result =
        run_layers(call, view.input, config.batch_first, hx, cx, lengths_opt);
    output = std::move(result.output);
    hy = std::move(result.h);
    cy = std::move(result.c);
  }
  if (!config.return_sequences) {
    output = last_step(config, hy.back());
  }
  if (!view.is_batched) {
    output = output.squeeze(config.return_sequences ? view.batch_dim : 0);
    for (auto& state : hy) {
      state = state.squeeze(1);
    }
    for (auto& state : cy) {
      state = state.squeeze(1);
    }
  }
  return std::make_tuple(std::move(output), std::move(hy), std::move(cy));
}

// forward_with_packed_input of the three modules; h0 (and LSTM's c0)
// undefined means zeros. Returns (output, hy, cy), cy undefined outside LSTM.
std::tuple<torch::nn::utils::rnn::PackedSequence, torch::Tensor, torch::Tensor>
packed_forward(
    const ModuleCall& call,
    const torch::nn::utils::rnn::PackedSequence& packed_input,
    const torch::Tensor& h0,
    const torch::Tensor& c0) {
  const RecurrentConfig& config = call.config;
  check_uniform_for(
      config,
      "forward_with_packed_input",
      "pad the input with pad_packed_sequence and call "
      "forward_layers(padded, hx, lengths), which takes and returns one "
      "state tensor per layer");
  TORCH_CHECK(
      config.return_sequences,
      config.module_name,
      ": forward_with_packed_input returns a PackedSequence, which cannot "
      "hold the (batch, features) last-step output of "
      "return_sequences=false; pad the input with pad_packed_sequence and "
      "call forward(padded, hx, lengths)");
  const UnpackedInput unpacked = unpack_sorted(config, packed_input);
  const int64_t num_sequences = unpacked.padded.size(1);
  const bool lstm = call.recurrence.is_lstm();
  const char* h_name = lstm ? "h_0" : "hx";
  std::optional<torch::Tensor> hx;
  std::optional<torch::Tensor> cx;
  if (h0.defined()) {
    check_packed_state(config, h_name, h0, num_sequences);
    if (lstm) {
      check_packed_state(config, "c_0", c0, num_sequences);
    }
    if (!config.fused()) {
      check_stacked_state(
          config,
          h_name,
          h0,
          /*is_batched=*/true,
          num_sequences,
          config.output_of(0),
          config.proj_of(0) > 0 ? "proj_size" : "hidden_size");
      if (lstm) {
        check_stacked_state(
            config,
            "c_0",
            c0,
            /*is_batched=*/true,
            num_sequences,
            config.hidden_of(0),
            "hidden_size");
      }
    }
    hx = permute_batch(h0, packed_input.sorted_indices());
    if (lstm) {
      cx = permute_batch(c0, packed_input.sorted_indices());
    }
  }
  auto [output, hy, cy] = run_stacked(
      call,
      unpacked.padded,
      /*batch_first=*/false,
      hx,
      cx,
      unpacked.lengths);
  const torch::Tensor& unsorted_indices = packed_input.unsorted_indices();
  return std::make_tuple(
      repack(output, unpacked, packed_input),
      permute_batch(hy, unsorted_indices),
      cy.defined() ? permute_batch(cy, unsorted_indices) : torch::Tensor());
}

Recurrence rnn_recurrence(const RNNOptions& options) {
  const bool is_relu =
      std::holds_alternative<torch::enumtype::kReLU>(options.nonlinearity());
  return {is_relu ? &deeprnn::rnn_relu : &deeprnn::rnn_tanh};
}

constexpr Recurrence kGRURecurrence{&deeprnn::gru};
constexpr Recurrence kLSTMRecurrence{nullptr};

} // namespace

// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ RNN ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

RNNImpl::RNNImpl(const RNNOptions& options_) : options(options_) {
  reset();
}

void RNNImpl::reset() {
  const RecurrentConfig config = config_of(options);
  check_options(config);
  ParameterLayout layout = register_recurrent_parameters(*this, config);
  flat_weights_names_ = std::move(layout.names);
  layer_begin_ = std::move(layout.layer_begin);
  reset_parameters();
}

void RNNImpl::reset_parameters() {
  reset_recurrent_parameters(*this, 1, flat_weights_names_, layer_begin_);
}

void RNNImpl::pretty_print(std::ostream& stream) const {
  const RecurrentConfig config = config_of(options);
  const bool is_relu =
      std::holds_alternative<torch::enumtype::kReLU>(options.nonlinearity());
  stream << "deeprnn::RNN(";
  print_common_options(stream, config);
  stream << ", nonlinearity=" << (is_relu ? "kReLU" : "kTanh");
  print_trailing_options(stream, config);
  print_extra_options(stream, config);
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
  auto [output, hy, cy] = stacked_forward(
      module_call(
          *this,
          options,
          rnn_recurrence(options),
          flat_weights_names_,
          layer_begin_),
      input,
      hx,
      torch::Tensor(),
      lengths);
  return std::make_tuple(std::move(output), std::move(hy));
}

std::tuple<torch::nn::utils::rnn::PackedSequence, torch::Tensor> RNNImpl::
    forward_with_packed_input(
        const torch::nn::utils::rnn::PackedSequence& packed_input,
        torch::Tensor hx) {
  auto [output, hy, cy] = packed_forward(
      module_call(
          *this,
          options,
          rnn_recurrence(options),
          flat_weights_names_,
          layer_begin_),
      packed_input,
      hx,
      torch::Tensor());
  return std::make_tuple(std::move(output), std::move(hy));
}

std::tuple<torch::Tensor, std::vector<torch::Tensor>> RNNImpl::forward_layers(
    const torch::Tensor& input,
    std::vector<torch::Tensor> hx,
    const torch::Tensor& lengths) {
  auto [output, hy, cy] = layers_forward(
      module_call(
          *this,
          options,
          rnn_recurrence(options),
          flat_weights_names_,
          layer_begin_),
      input,
      hx,
      {},
      lengths);
  return std::make_tuple(std::move(output), std::move(hy));
}

// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ GRU ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

GRUImpl::GRUImpl(const GRUOptions& options_) : options(options_) {
  reset();
}

void GRUImpl::reset() {
  const RecurrentConfig config = config_of(options);
  check_options(config);
  ParameterLayout layout = register_recurrent_parameters(*this, config);
  flat_weights_names_ = std::move(layout.names);
  layer_begin_ = std::move(layout.layer_begin);
  reset_parameters();
}

void GRUImpl::reset_parameters() {
  reset_recurrent_parameters(*this, 3, flat_weights_names_, layer_begin_);
}

void GRUImpl::pretty_print(std::ostream& stream) const {
  const RecurrentConfig config = config_of(options);
  stream << "deeprnn::GRU(";
  print_common_options(stream, config);
  print_trailing_options(stream, config);
  print_extra_options(stream, config);
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
  auto [output, hy, cy] = stacked_forward(
      module_call(
          *this, options, kGRURecurrence, flat_weights_names_, layer_begin_),
      input,
      hx,
      torch::Tensor(),
      lengths);
  return std::make_tuple(std::move(output), std::move(hy));
}

std::tuple<torch::nn::utils::rnn::PackedSequence, torch::Tensor> GRUImpl::
    forward_with_packed_input(
        const torch::nn::utils::rnn::PackedSequence& packed_input,
        torch::Tensor hx) {
  auto [output, hy, cy] = packed_forward(
      module_call(
          *this, options, kGRURecurrence, flat_weights_names_, layer_begin_),
      packed_input,
      hx,
      torch::Tensor());
  return std::make_tuple(std::move(output), std::move(hy));
}

std::tuple<torch::Tensor, std::vector<torch::Tensor>> GRUImpl::forward_layers(
    const torch::Tensor& input,
    std::vector<torch::Tensor> hx,
    const torch::Tensor& lengths) {
  auto [output, hy, cy] = layers_forward(
      module_call(
          *this, options, kGRURecurrence, flat_weights_names_, layer_begin_),
      input,
      hx,
      {},
      lengths);
  return std::make_tuple(std::move(output), std::move(hy));
}

// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ LSTM ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

LSTMImpl::LSTMImpl(const LSTMOptions& options_) : options(options_) {
  reset();
}

void LSTMImpl::reset() {
  const RecurrentConfig config = config_of(options);
  check_options(config);
  ParameterLayout layout = register_recurrent_parameters(*this, config);
  flat_weights_names_ = std::move(layout.names);
  layer_begin_ = std::move(layout.layer_begin);
  reset_parameters();
}

void LSTMImpl::reset_parameters() {
  reset_recurrent_parameters(*this, 4, flat_weights_names_, layer_begin_);
}

void LSTMImpl::pretty_print(std::ostream& stream) const {
  const RecurrentConfig config = config_of(options);
  stream << "deeprnn::LSTM(";
  print_common_options(stream, config);
  print_trailing_options(stream, config);
  if (config.proj_sizes.empty()) {
    stream << ", proj_size=" << config.proj_size;
  } else {
    stream << ", proj_sizes=" << list_str(config.proj_sizes);
  }
  print_extra_options(stream, config);
  stream << ")";
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
  const ModuleCall call = module_call(
      *this, options, kLSTMRecurrence, flat_weights_names_, layer_begin_);
  torch::Tensor h0;
  torch::Tensor c0;
  if (hx_opt.has_value()) {
    std::tie(h0, c0) = *hx_opt;
    check_lstm_state_defined(call.config, h0, c0);
  }
  auto [output, hy, cy] = stacked_forward(call, input, h0, c0, lengths);
  return std::make_tuple(
      std::move(output), std::make_tuple(std::move(hy), std::move(cy)));
}

std::tuple<
    torch::nn::utils::rnn::PackedSequence,
    std::tuple<torch::Tensor, torch::Tensor>>
LSTMImpl::forward_with_packed_input(
    const torch::nn::utils::rnn::PackedSequence& packed_input,
    std::optional<std::tuple<torch::Tensor, torch::Tensor>> hx_opt) {
  const ModuleCall call = module_call(
      *this, options, kLSTMRecurrence, flat_weights_names_, layer_begin_);
  torch::Tensor h0;
  torch::Tensor c0;
  if (hx_opt.has_value()) {
    std::tie(h0, c0) = *hx_opt;
    check_lstm_state_defined(call.config, h0, c0);
  }
  auto [output, hy, cy] = packed_forward(call, packed_input, h0, c0);
  return std::make_tuple(
      std::move(output), std::make_tuple(std::move(hy), std::move(cy)));
}

std::tuple<
    torch::Tensor,
    std::tuple<std::vector<torch::Tensor>, std::vector<torch::Tensor>>>
LSTMImpl::forward_layers(
    const torch::Tensor& input,
    std::optional<
        std::tuple<std::vector<torch::Tensor>, std::vector<torch::Tensor>>> hx,
    const torch::Tensor& lengths) {
  std::vector<torch::Tensor> h0;
  std::vector<torch::Tensor> c0;
  if (hx.has_value()) {
    std::tie(h0, c0) = std::move(*hx);
  }
  auto [output, hy, cy] = layers_forward(
      module_call(
          *this, options, kLSTMRecurrence, flat_weights_names_, layer_begin_),
      input,
      h0,
      c0,
      lengths);
  return std::make_tuple(
      std::move(output), std::make_tuple(std::move(hy), std::move(cy)));
}

} // namespace deeprnn
