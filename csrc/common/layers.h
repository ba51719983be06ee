#pragma once

// What the CPU and CUDA drivers share, above the cell kernels: the batch
// order of variable lengths, each layer's parameters and folded biases, the
// reserve cut into layers, dropout masks. Only ATen operators, so the same
// code serves every backend; the kernels' own loops stay in cpu/ and cuda/.

#include "common/config.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/TensorOptions.h>

#include <array>
#include <optional>
#include <vector>

namespace deeprnn {

inline bool present(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined();
}

// The plan of `lengths` (absent: none), read on the host. Lengths on a
// device cost one copy to the host (a synchronisation with its stream).
std::optional<LengthsPlan> plan_on_host(
    const RNNConfig& cfg,
    const std::optional<at::Tensor>& lengths);

// Moves tensors between the caller's batch order and the kernels' order
// (rows sorted by decreasing length, see LengthsPlan). Without lengths, or
// with lengths already sorted, both are the identity.
class BatchOrder {
 public:
  BatchOrder(const std::optional<LengthsPlan>& plan, c10::Device device);

  // t with its batch dimension `dim` in the kernels' order; contiguous.
  at::Tensor sorted(const at::Tensor& t, int64_t dim) const;
  // t (in the kernels' order) with its batch dimension back in the caller's.
  at::Tensor to_caller(const at::Tensor& t, int64_t dim) const;
  bool permuted() const {
    return to_sorted_.defined();
  }

 private:
  at::Tensor to_sorted_; // [B] int64, on the device
  at::Tensor to_caller_; // [B] int64, on the device
};

// Rows of a [T*B, *] view at each sorted sequence's last valid step
// (t = length - 1), where the reverse direction starts; int64 on `device`.
at::Tensor reverse_start_rows(
    const LengthsPlan& plan,
    int64_t batch,
    c10::Device device);

// The parameters of one layer and direction, contiguous.
struct CellParams {
  at::Tensor w_ih; // [G*H, I_l]
  at::Tensor w_hh; // [G*H, P]
  at::Tensor b_ih; // [G*H] or undefined
  at::Tensor b_hh; // [G*H] or undefined
  at::Tensor w_hr; // [P, H] or undefined
};

std::vector<CellParams> unpack_params(
    const RNNConfig& cfg,
    at::TensorList params);

// [W_ih_fwd; W_ih_rev]: the input projection of both directions in one GEMM.
at::Tensor stacked_input_weights(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer);

// The biases the cell kernels add to the input projection, per direction
// [D, G*H]: b_ih + b_hh, except GRU's b_hn, which sits inside
// r * (W_hn h + b_hn) and is passed on its own (see recurrent_bias). Zeros
// without biases, so the kernels have one shape. Adding them in the kernel
// rather than in the projection GEMM saves a broadcast copy of all gates.
at::Tensor input_bias(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::TensorOptions& opts);

// GRU's b_hn per direction [D, H] (zeros without biases).
at::Tensor recurrent_bias(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::TensorOptions& opts);

// The reserve cut into its per-layer pieces (see common/config.h); pieces a
// call does not keep are undefined.
struct LayerReserve {
  at::Tensor gates; // [T, B, D*G*H]
  at::Tensor cells; // [T, B, D*H]
  at::Tensor hidden; // [T, B, D*H]
  at::Tensor output; // [T, B, D*P]
  at::Tensor mask; // [T, B, D*P]
};

std::vector<LayerReserve> split_reserve(
    const RNNConfig& cfg,
    const at::Tensor& reserve);

// Backward's gradients of the pre-activations for a run of steps: direction
// d's steps [first[d], first[d] + steps) in time order, rows [0, steps) of
// dgates_x / dgates_h [>= steps, B, D*G*H] (the same tensor but for GRU) and,
// with projection, of dh_total [>= steps, B, D*P], the full gradient of each
// projected h_t.
struct StepChunk {
  int64_t steps;
  std::array<int64_t, 2> first;
};

// Adds a chunk's share of a layer's gradients, as GEMMs over its steps on
// the tensors' device: when need_param_grads, every parameter gradient of
// every direction into dparams, except the term of dW_hh from the steps that
// read h0 (see add_initial_state_gradient); when dx is defined, dx for the
// chunk's steps = dG_x W_ih, summed over the directions (with two
// directions whose chunks cover different steps, dx must be zero on entry).
// `written` (one flag per dparams entry) records which gradients hold a
// value: the first contribution assigns, later ones add.
void add_chunk_gradients(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::Tensor& layer_input, // [T, B, I_l]
    const at::Tensor& y, // [T, B, D*P]
    const LayerReserve& saved,
    const at::Tensor& dgates_x,
    const at::Tensor& dgates_h,
    const at::Tensor& dh_total,
    const StepChunk& chunk,
    bool need_param_grads,
    const at::Tensor& dx, // [T, B, I_l] or undefined
    std::vector<at::Tensor>& dparams, // out, flat like params
    std::vector<bool>& written);

// dW_hh of direction d += dG_h^T h0 over the steps that read the initial
// state: dgh_initial [B, G*H] holds, for each row, dG_h at the row's first
// step (t = 0 forward; t = length - 1 in reverse).
void add_initial_state_gradient(
    const RNNConfig& cfg,
    int64_t layer,
    int64_t d,
    const at::Tensor& h0, // [L*D, B, P]
    const at::Tensor& dgh_initial,
    std::vector<at::Tensor>& dparams,
    std::vector<bool>& written);

// The end of a layer's backward after a time loop that kept every step:
// add_chunk_gradients over all T steps (dgates_x/dgates_h [T, B, D*G*H],
// dh_total [T, B, D*P]) and the initial-state term of dW_hh, into dparams
// (when need_param_grads) and a new dx (when need_input_grad); y, h0, saved
// as the layer's forward left them.
void layer_weight_and_input_gradients(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::Tensor& layer_input, // [T, B, I_l]
    const at::Tensor& y, // [T, B, D*P]
    const at::Tensor& h0, // [L*D, B, P]
    const LayerReserve& saved,
    const at::Tensor& dgates_x,
    const at::Tensor& dgates_h,
    const at::Tensor& dh_total,
    bool need_input_grad,
    bool need_param_grads,
    at::Tensor& dx, // out: [T, B, I_l] if need_input_grad
    std::vector<at::Tensor>& dparams, // out, flat like params
    const LengthsPlan* plan);

// Fills mask_storage with a dropout mask scaled by 1/(1-p) (zeros for p = 1)
// from PyTorch's generator, and returns it.
at::Tensor draw_dropout_mask(const at::Tensor& mask_storage, double p);

} // namespace deeprnn
