#pragma once

// What every backend shares about one call: the mode, the sizes derived from
// the arguments, the argument checks, and the layout of the reserve.
// Header-only and free of any backend, so CPU, CUDA and Meta kernels (and the
// autograd kernel) read the same picture.

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace deeprnn {

enum class Mode { LSTM, GRU, RNN_TANH, RNN_RELU };

Mode parse_mode(c10::string_view mode);
const char* mode_name(Mode mode); // "lstm", "gru", "rnn_tanh", "rnn_relu"
int64_t gate_count(Mode mode); // G: 4, 3, 1, 1

// Sizes and options of one call, after the checks of check_rnn_args.
struct RNNConfig {
  Mode mode = Mode::LSTM;
  std::string op_name; // "deeprnn.lstm", for messages
  int64_t seq_len = 0; // T
  int64_t batch = 0; // B
  int64_t input_size = 0; // I
  int64_t hidden_size = 0; // H
  int64_t proj_size = 0; // P: proj_size, or H without projection
  bool has_proj = false;
  int64_t num_layers = 0; // L
  int64_t num_directions = 1; // D
  int64_t gates = 1; // G
  bool has_biases = true;
  bool batch_first = false;
  bool train = false;
  double dropout = 0.0;
  int64_t params_per_direction = 2; // 2 + 2 (biases) + 1 (projection)

  // Input width of layer l: I for l = 0, D*P above.
  int64_t layer_input_size(int64_t layer) const {
    return layer == 0 ? input_size : num_directions * proj_size;
  }
  // Dropout masks are drawn (and kept) only in training between layers.
  bool uses_dropout() const {
    return train && dropout > 0.0 && num_layers > 1;
  }
};

// Checks every argument of a call (ranks, sizes, dtypes, devices, parameter
// count and shapes, options) and returns the sizes. Each failure is a
// c10::Error whose text names the op, the argument, what was expected and
// what came.
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
    const std::optional<at::Tensor>& lengths = std::nullopt);

// The same checks on sizes that may be symbolic (fake tensors under
// torch.compile and torch.export with dynamic shapes): T and B stay symbolic
// in seq_len and batch (cfg.seq_len and cfg.batch are 0), every other size
// is a number. The Meta kernels use this form, so no check specialises T or
// B.
struct SymbolicRNNConfig {
  RNNConfig cfg;
  c10::SymInt seq_len; // T
  c10::SymInt batch; // B
};

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
    const std::optional<at::Tensor>& lengths = std::nullopt);

// The checked config of real (not symbolic) tensors: T and B as numbers.
RNNConfig concrete_config(SymbolicRNNConfig&& checked);

// Checks what _rnn_backward takes beside the forward's arguments: the
// forward's output and reserve, and the gradients of output, hy and cy (each
// gradient may be absent). Shape, dtype and device of each, with symbolic
// sizes allowed, so that the CPU, CUDA and Meta kernels refuse the same
// calls.
void check_backward_args(
    const SymbolicRNNConfig& sym,
    const at::Tensor& input,
    const at::Tensor& output,
    const at::Tensor& reserve,
    const std::optional<at::Tensor>& grad_output,
    const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy);

// Variable lengths (DESIGN.md §2). The kernels run the batch sorted by
// decreasing length (a stable sort, so equal lengths keep their order):
// the sequences still running at step t are then the first active[t] rows,
// and a step only works on those rows, in both directions. Lengths that are
// already non-increasing need no permutation (`order` is empty).
struct LengthsPlan {
  std::vector<int64_t> order; // sorted row i is the caller's row order[i]
  std::vector<int64_t> sorted; // [B] the lengths in the sorted order
  std::vector<int64_t> active; // [T + 1] rows running at step t; active[T]=0
  bool permuted() const {
    return !order.empty();
  }
};

// Checks the values of `lengths` (int64 [B] on the CPU, already checked for
// dtype and shape by check_rnn_args): each must be in 1..T. The error names
// the op, the first bad entry and its value.
LengthsPlan plan_lengths(const RNNConfig& cfg, const at::Tensor& lengths);

// torch.nn's name of flat parameter `index`, e.g. "weight_hh_l1_reverse".
std::string param_name(const RNNConfig& cfg, int64_t index);

// The reserve: one flat tensor of the input's dtype, laid out per layer l
// (all time-major, direction d's block at columns [d*W, (d+1)*W) of width W):
//
//   gates     [T, B, D*G*H]  gate activations (LSTM i,f,g,o; GRU r,z,n;
//                            RNN: unused, size 0)
//   cells     [T, B, D*H]    LSTM: c_t.   GRU: W_hn h_{t-1} + b_hn.
//   hidden    [T, B, D*H]    LSTM with projection: o * tanh(c_t) before W_hr
//   output    [T, B, D*P]    layer output before dropout (l < L-1 only; the
//                            last layer's output is the op's output)
//   mask      [T, B, D*P]    dropout mask scaled by 1/(1-p) (l < L-1, only
//                            when dropout is active)
//
// Total elements = sum over layers of T*B*D*(G*H + c*H + h*H + (o+m)*P), see
// reserve_layer_size. This is what `deeprnn::reserve_size` reports.
struct ReserveLayout {
  int64_t gates = 0, cells = 0, hidden = 0, output = 0, mask = 0;
  int64_t size() const {
    return gates + cells + hidden + output + mask;
  }
};

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
    const std::string& op); // names the op in an overflow error

// Every block is T*B*(width), so the reserve is T*B times the elements one
// (step, batch row) position needs; the Meta kernels multiply symbolically.
int64_t reserve_numel_per_position(const RNNConfig& cfg);
int64_t reserve_numel(const RNNConfig& cfg);
c10::SymInt reserve_numel(const SymbolicRNNConfig& sym); // T, B symbolic

// a * b and a + b of reserve sizes; absurd sizes fail with an error that
// names `op` instead of wrapping around.
int64_t checked_mul(int64_t a, int64_t b, const std::string& op);
int64_t checked_add(int64_t a, int64_t b, const std::string& op);

} // namespace deeprnn
