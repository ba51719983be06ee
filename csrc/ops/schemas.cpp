// The one TORCH_LIBRARY of deeprnn: every operator schema lives here.
//
// Public, differentiable operators follow aten::lstm / aten::gru in argument
// order; hx and cx may be None (zeros). `lengths` (int64 (B), each in 1..T,
// on the CPU or the input's device) makes the batch variable-length: see
// DESIGN.md §2 and common/config.h (LengthsPlan). Below them, the private
// _rnn_forward / _rnn_backward carry the work and have CPU (and later CUDA)
// and Meta kernels. Results that a call does not produce (cy outside LSTM,
// the reserve when no gradient will be taken, gradients not asked for) come
// back as empty tensors of shape (0) (or an empty list), never undefined, so
// that every backend and the fake-tensor path agree on the schema.

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace deeprnn {
namespace {

// The switch of the CUDA fast paths (cuda/persistent.cuh). Its first value
// comes from DEEPRNN_CUDA_FAST_PATH: unset, empty or "0" is off, "1" is on;
// anything else is off, with a warning. Off by default: the fast path has
// not been verified on a GPU yet. It lives here, not in cuda/, so that a
// build without CUDA kernels has the same operators (the switch then
// changes nothing).
int64_t fast_path_from_environment() {
  const char* value = std::getenv("DEEPRNN_CUDA_FAST_PATH");
  if (value == nullptr || value[0] == '\0' || std::string(value) == "0") {
    return 0;
  }
  if (std::string(value) == "1") {
    return 1;
  }
  TORCH_WARN(
      "deeprnn: DEEPRNN_CUDA_FAST_PATH must be 0 or 1, got '",
      value,
      "': the CUDA fast paths stay off");
  return 0;
}

std::atomic<int64_t>& fast_path_switch() {
  static std::atomic<int64_t> value{fast_path_from_environment()};
  return value;
}

// Layers run by the fast paths in this process: [forward, backward].
std::array<std::atomic<int64_t>, 2>& fast_path_layer_counts() {
  static std::array<std::atomic<int64_t>, 2> counts{};
  return counts;
}

int64_t cuda_fast_path(int64_t enable) {
  TORCH_CHECK(
      enable >= -1 && enable <= 1,
      "deeprnn._cuda_fast_path: enable must be -1 (query), 0 (off) or 1 (on), "
      "got ",
      enable);
  if (enable == -1) {
    return fast_path_switch().load();
  }
  return fast_path_switch().exchange(enable);
}

std::vector<int64_t> cuda_fast_path_layers(
    int64_t add_forward,
    int64_t add_backward) {
  TORCH_CHECK(
      add_forward >= 0 && add_backward >= 0,
      "deeprnn._cuda_fast_path_layers: the counts only grow, got add_forward = ",
      add_forward,
      " and add_backward = ",
      add_backward);
  auto& counts = fast_path_layer_counts();
  return {
      counts[0].fetch_add(add_forward) + add_forward,
      counts[1].fetch_add(add_backward) + add_backward};
}

} // namespace
} // namespace deeprnn

TORCH_LIBRARY(deeprnn, m) {
  // Dropout draws from the default generator, hence nondeterministic_seeded.
  const std::vector<at::Tag> seeded = {at::Tag::nondeterministic_seeded};
  m.def(
      "lstm(Tensor input, Tensor? hx, Tensor? cx, Tensor[] params, "
      "bool has_biases, int num_layers, float dropout, bool train, "
      "bool bidirectional, bool batch_first, Tensor? lengths=None) "
      "-> (Tensor, Tensor, Tensor)",
      seeded);
  for (const char* name : {"gru", "rnn_tanh", "rnn_relu"}) {
    m.def(
        (std::string(name) +
         "(Tensor input, Tensor? hx, Tensor[] params, bool has_biases, "
         "int num_layers, float dropout, bool train, bool bidirectional, "
         "bool batch_first, Tensor? lengths=None) -> (Tensor, Tensor)")
            .c_str(),
        seeded);
  }
  // mode: "lstm", "gru", "rnn_tanh" or "rnn_relu".
  // Returns (output, hy, cy, reserve); cy is (0) outside LSTM, reserve is (0)
  // unless need_reserve.
  m.def(
      "_rnn_forward(Tensor input, Tensor? hx, Tensor? cx, Tensor[] params, "
      "bool has_biases, int num_layers, float dropout, bool train, "
      "bool bidirectional, bool batch_first, str mode, bool need_reserve, "
      "Tensor? lengths=None) -> (Tensor, Tensor, Tensor, Tensor)",
      seeded);
  // output_mask: which of grad_input, grad_hx, grad_cx, grad_params to
  // compute. Returns (grad_input, grad_hx, grad_cx, grad_params).
  m.def(
      "_rnn_backward(Tensor input, Tensor? hx, Tensor? cx, Tensor[] params, "
      "Tensor output, Tensor reserve, Tensor? grad_output, Tensor? grad_hy, "
      "Tensor? grad_cy, bool has_biases, int num_layers, float dropout, "
      "bool train, bool bidirectional, bool batch_first, str mode, "
      "bool[4] output_mask, Tensor? lengths=None) "
      "-> (Tensor, Tensor, Tensor, Tensor[])");
  // Whether the CPU kernels multiply by MKL-packed recurrent weights in this
  // process (see cpu/packed_gemm.h); for tests and benchmarks.
  m.def("_cpu_packed_gemm() -> bool");
  // The switch of the CPU's fused small-batch step (cpu/rnn_cpu.cpp): sets
  // it to `enable` (0 off, 1 on where a layer fits) and returns the previous
  // setting; -1 only returns it. Starts as the environment variable
  // DEEPRNN_CPU_FUSED_STEP says (unset: on). For tests and benchmarks.
  m.def("_cpu_fused_step(int enable=-1) -> int");
  // How many layers the fused step has run in this process, forward and
  // backward, after adding the two arguments: [forward, backward].
  m.def(
      "_cpu_fused_step_layers(int add_forward=0, int add_backward=0) -> int[]");
  // The switch of the CUDA fast paths (the persistent kernels,
  // cuda/persistent.cuh): sets it to `enable` (0 off, 1 on where a layer
  // fits) and returns the previous setting; -1 only returns it. Starts as
  // the environment variable DEEPRNN_CUDA_FAST_PATH says (unset: off). For
  // tests and benchmarks; a build without CUDA kernels has it too.
  m.def("_cuda_fast_path(int enable=-1) -> int");
  // How many layers the CUDA fast paths have run in this process, forward
  // and backward, after adding the two arguments (the CUDA kernels add 1 per
  // layer; tests read them with the defaults): [forward, backward].
  m.def(
      "_cuda_fast_path_layers(int add_forward=0, int add_backward=0) -> int[]");
  // Elements of the reserve a training forward keeps (see common/config.h).
  m.def(
      "reserve_size(str mode, int seq_len, int batch, int input_size, "
      "int hidden_size, int proj_size, int num_layers, bool bidirectional, "
      "bool with_dropout) -> int");
}

// Backend-independent: no tensor arguments, one kernel for every build.
TORCH_LIBRARY_IMPL(deeprnn, CompositeImplicitAutograd, m) {
  m.impl("_cuda_fast_path", &deeprnn::cuda_fast_path);
  m.impl("_cuda_fast_path_layers", &deeprnn::cuda_fast_path_layers);
}
