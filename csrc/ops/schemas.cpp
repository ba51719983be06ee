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
#include <torch/library.h>

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
  // Elements of the reserve a training forward keeps (see common/config.h).
  m.def(
      "reserve_size(str mode, int seq_len, int batch, int input_size, "
      "int hidden_size, int proj_size, int num_layers, bool bidirectional, "
      "bool with_dropout) -> int");
}
