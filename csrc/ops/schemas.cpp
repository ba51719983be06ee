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

#include "common/path_switches.h"

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace deeprnn {
namespace {

// A process-wide switch of an optional kernel path and the number of layers
// the path has run, [forward, backward, stacked forward, stacked backward]
// (stacked: of those, the layers that ran in one launch with the rest of
// their stack): behind the private operators
// _cuda_fast_path(_layers) and _cpu_fused_step(_layers). Its first value
// comes from an environment variable: unset or empty gives `fallback`, "0"
// off, "1" on, anything else `fallback` with a warning.
class PathSwitch {
 public:
  PathSwitch(const char* op, const char* variable, int64_t fallback)
      : op_(op), value_(from_environment(variable, fallback)) {}

  int64_t get() const {
    return value_.load(std::memory_order_relaxed);
  }

  // Sets the switch to `enable` and returns the previous value; -1 only
  // returns it.
  int64_t exchange(int64_t enable) {
    TORCH_CHECK(
        enable >= -1 && enable <= 1,
        "deeprnn.",
        op_,
        ": enable must be -1 (query), 0 (off) or 1 (on), got ",
        enable);
    return enable == -1 ? value_.load() : value_.exchange(enable);
  }

  // Adds to the layer counts and returns them.
  std::vector<int64_t> add_layers(const std::array<int64_t, 4>& add) {
    TORCH_CHECK(
        add[0] >= 0 && add[1] >= 0 && add[2] >= 0 && add[3] >= 0,
        "deeprnn.",
        op_,
        "_layers: the counts only grow, got add_forward = ",
        add[0],
        ", add_backward = ",
        add[1],
        ", add_stacked_forward = ",
        add[2],
        " and add_stacked_backward = ",
        add[3]);
    std::vector<int64_t> counts;
    for (const auto i : c10::irange(add.size())) {
      counts.push_back(counts_[i].fetch_add(add[i]) + add[i]);
    }
    return counts;
  }

 private:
  static int64_t from_environment(const char* variable, int64_t fallback) {
    const char* value = std::getenv(variable);
    if (value == nullptr || value[0] == '\0') {
      return fallback;
    }
    if (std::string(value) == "0" || std::string(value) == "1") {
      return value[0] - '0';
    }
    TORCH_WARN(
        "deeprnn: ",
        variable,
        " must be 0 or 1, got '",
        value,
        "': it stays ",
        fallback != 0 ? "on" : "off");
    return fallback;
  }

  const char* op_;
  std::atomic<int64_t> value_;
  std::array<std::atomic<int64_t>, 4> counts_{};
};

// The CUDA fast paths (cuda/persistent.cuh), which read it through the
// dispatcher. Off by default: they have not been verified on a GPU yet. It
// lives here, not in cuda/, so that a build without CUDA kernels has the
// same operators (the switch then changes nothing).
PathSwitch& cuda_fast_path_switch() {
  static PathSwitch value{"_cuda_fast_path", "DEEPRNN_CUDA_FAST_PATH", 0};
  return value;
}

// The CPU's fused small-batch step (cpu/rnn_cpu.cpp), read through
// common/path_switches.h. On by default.
PathSwitch& cpu_fused_step_switch() {
  static PathSwitch value{"_cpu_fused_step", "DEEPRNN_CPU_FUSED_STEP", 1};
  return value;
}

int64_t cuda_fast_path(int64_t enable) {
  return cuda_fast_path_switch().exchange(enable);
}

std::vector<int64_t> cuda_fast_path_layers(
    int64_t add_forward,
    int64_t add_backward,
    int64_t add_stacked_forward,
    int64_t add_stacked_backward) {
  return cuda_fast_path_switch().add_layers(
      {add_forward, add_backward, add_stacked_forward, add_stacked_backward});
}

// Captures and replays of the CUDA graphs of the general path's time loops
// (cuda/loop_graphs.h), counted by the CUDA kernels.
std::vector<int64_t> cuda_loop_graphs(
    int64_t add_captures,
    int64_t add_replays) {
  static std::array<std::atomic<int64_t>, 2> counts{};
  TORCH_CHECK(
      add_captures >= 0 && add_replays >= 0,
      "deeprnn._cuda_loop_graphs: the counts only grow, got add_captures = ",
      add_captures,
      " and add_replays = ",
      add_replays);
  return {
      counts[0].fetch_add(add_captures) + add_captures,
      counts[1].fetch_add(add_replays) + add_replays};
}

int64_t cpu_fused_step(int64_t enable) {
  return cpu_fused_step_switch().exchange(enable);
}

std::vector<int64_t> cpu_fused_step_layers(
    int64_t add_forward,
    int64_t add_backward) {
  std::vector<int64_t> counts =
      cpu_fused_step_switch().add_layers({add_forward, add_backward, 0, 0});
  counts.resize(2); // [forward, backward]: nothing stacks on the CPU
  return counts;
}

// The chunk budget of the CPU backward loop (0: its default), set by
// _cpu_backward_chunk_bytes.
std::atomic<int64_t>& backward_chunk_bytes_setting() {
  static std::atomic<int64_t> bytes{0};
  return bytes;
}

int64_t cpu_backward_chunk_bytes_op(int64_t bytes) {
  TORCH_CHECK(
      bytes >= -1,
      "deeprnn._cpu_backward_chunk_bytes: bytes must be -1 (query), 0 (the "
      "default) or a positive byte count, got ",
      bytes);
  return bytes == -1 ? backward_chunk_bytes_setting().load()
                     : backward_chunk_bytes_setting().exchange(bytes);
}

} // namespace

int64_t cpu_backward_chunk_bytes() {
  return backward_chunk_bytes_setting().load(std::memory_order_relaxed);
}

bool cpu_fused_step_enabled() {
  return cpu_fused_step_switch().get() != 0;
}

void count_cpu_fused_step_layer(bool backward) {
  cpu_fused_step_switch().add_layers(
      {backward ? 0 : 1, backward ? 1 : 0, 0, 0});
}

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
  // Whether the CPU kernels multiply by recurrent weights packed once per
  // layer (by MKL or oneDNN) in this process (see cpu/packed_gemm.h); for
  // tests and benchmarks.
  m.def("_cpu_packed_gemm() -> bool");
  // Which library packs those weights: "mkl", "onednn" or "none" (chosen
  // once per process; DEEPRNN_CPU_GEMM=auto|mkl|onednn).
  m.def("_cpu_packed_gemm_library() -> str");
  // The switch of the CPU's fused small-batch step (cpu/rnn_cpu.cpp): sets
  // it to `enable` (0 off, 1 on where a layer fits) and returns the previous
  // setting; -1 only returns it. Starts as the environment variable
  // DEEPRNN_CPU_FUSED_STEP says (unset: on). For tests and benchmarks.
  m.def("_cpu_fused_step(int enable=-1) -> int");
  // How many layers the fused step has run in this process, forward and
  // backward, after adding the two arguments: [forward, backward].
  m.def(
      "_cpu_fused_step_layers(int add_forward=0, int add_backward=0) -> int[]");
  // The bytes of pre-activation gradients the CPU's general backward loop
  // keeps per chunk of steps before turning them into weight gradients and
  // dx (cpu/rnn_cpu.cpp): sets it to `bytes` (0: the default; 1 gives one
  // step per chunk) and returns the previous setting; -1 only returns it.
  // For tests and benchmarks.
  m.def("_cpu_backward_chunk_bytes(int bytes=-1) -> int");
  // The cap on idle bytes of the CPU kernels' buffer cache
  // (cpu/buffer_cache.h), which keeps the memory of freed reserves and
  // scratch buffers for the next call: sets it to `bytes` (0: no cache;
  // idle blocks beyond a new cap are freed) and returns the previous cap;
  // -1 only returns it. Starts as DEEPRNN_CPU_BUFFER_CACHE_MB says (unset:
  // 256 MiB).
  m.def("_cpu_buffer_cache_bytes(int bytes=-1) -> int");
  // The buffer cache's state: [idle bytes, idle blocks, bytes in use,
  // requests served by an idle block].
  m.def("_cpu_buffer_cache_stats() -> int[]");
  // Whether every CPU buffer from the buffer cache (the reserve, the
  // kernels' scratch) comes filled with NaNs, so that a kernel reading an
  // element it has not written shows in its results: sets it to `enable`
  // and returns the previous setting; -1 only returns it. Off by default;
  // for tests.
  m.def("_cpu_buffer_cache_poison(int enable=-1) -> int");
  // The switch of the CUDA fast paths (the persistent kernels,
  // cuda/persistent.cuh): sets it to `enable` (0 off, 1 on where a layer
  // fits) and returns the previous setting; -1 only returns it. Starts as
  // the environment variable DEEPRNN_CUDA_FAST_PATH says (unset: off). For
  // tests and benchmarks; a build without CUDA kernels has it too.
  m.def("_cuda_fast_path(int enable=-1) -> int");
  // How many layers the CUDA fast paths have run in this process, forward
  // and backward, and of those the layers the stack kernels ran (the
  // wavefront across a stack's layers), after adding the arguments (the
  // CUDA kernels add 1 per layer; tests read them with the defaults):
  // [forward, backward, stacked forward, stacked backward].
  m.def(
      "_cuda_fast_path_layers(int add_forward=0, int add_backward=0, "
      "int add_stacked_forward=0, int add_stacked_backward=0) -> int[]");
  // How many time loops of the general CUDA path have been captured as CUDA
  // graphs in this process, and how many replayed, after adding the
  // arguments (the CUDA kernels add 1 each; tests read them with the
  // defaults): [captures, replays]. The graphs come with the fast-path
  // switch (cuda/loop_graphs.h).
  m.def("_cuda_loop_graphs(int add_captures=0, int add_replays=0) -> int[]");
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
  m.impl("_cuda_loop_graphs", &deeprnn::cuda_loop_graphs);
  m.impl("_cpu_fused_step", &deeprnn::cpu_fused_step);
  m.impl("_cpu_fused_step_layers", &deeprnn::cpu_fused_step_layers);
  m.impl("_cpu_backward_chunk_bytes", &deeprnn::cpu_backward_chunk_bytes_op);
}
