#pragma once

// Fused pointwise cell kernels for the CPU: one call applies every gate of
// one direction at one time step to all batch rows (parallel over rows).
// Matrices are row-strided views so that kernels read and write straight
// into slices of the layer buffers (no copies in the time loop).
//
// The LSTM and GRU kernels take the `hidden` units [0, hidden) of gate
// blocks whose gates lie `gate_stride` columns apart: gate_stride = hidden for
// a whole layer; the fused small-batch step passes a thread's slice of units
// (pointers offset to its first unit, gate_stride = H).

#include <cstdint>

namespace deeprnn {
namespace cpu {

// A (rows x width) matrix whose row b starts at data + b * stride.
template <typename T>
struct Rows {
  T* data = nullptr;
  int64_t stride = 0;
  T* row(int64_t b) const {
    return data + b * stride;
  }
  // The rows from `first` on (empty stays empty).
  Rows from(int64_t first) const {
    return {data ? data + first * stride : nullptr, stride};
  }
  // The columns from `first` on (empty stays empty).
  Rows columns(int64_t first) const {
    return {data ? data + first : nullptr, stride};
  }
  explicit operator bool() const {
    return data != nullptr;
  }
};

template <typename T>
Rows<const T> as_const(Rows<T> rows) {
  return {rows.data, rows.stride};
}

template <typename scalar_t>
void lstm_cell_forward(
    int64_t batch,
    int64_t hidden,
    int64_t gate_stride,
    Rows<scalar_t> gates, // [B, 4H] in: x W_ih^T; out: i, f, g, o
    Rows<const scalar_t> recurrent, // [B, 4H] h_{t-1} W_hh^T
    const scalar_t* bias, // [4H] b_ih + b_hh
    Rows<const scalar_t> c_prev, // [B, H]
    Rows<scalar_t> c_out, // [B, H], may alias c_prev
    Rows<scalar_t> h_out); // [B, H] o * tanh(c)

template <typename scalar_t>
void lstm_cell_backward(
    int64_t batch,
    int64_t hidden,
    int64_t gate_stride,
    Rows<const scalar_t> gates, // [B, 4H] activations i, f, g, o
    Rows<const scalar_t> c, // [B, H] c_t
    Rows<const scalar_t> c_prev, // [B, H] c_{t-1}
    Rows<const scalar_t> dh, // [B, H] gradient of o * tanh(c_t)
    Rows<const scalar_t> dh_carry, // [B, H] added to dh; may be empty
    Rows<scalar_t> dc, // [B, H] in: dL/dc_t from t+1; out: dL/dc_{t-1}
    Rows<scalar_t> dgates); // [B, 4H] gradient of the pre-activations

template <typename scalar_t>
void gru_cell_forward(
    int64_t batch,
    int64_t hidden,
    int64_t gate_stride,
    Rows<scalar_t> gates, // [B, 3H] in: x W_ih^T; out: r, z, n
    Rows<const scalar_t> recurrent, // [B, 3H] h_{t-1} W_hh^T
    const scalar_t* bias, // [3H] b_ih + (b_hr, b_hz, 0)
    const scalar_t* b_hn, // [H]
    Rows<const scalar_t> h_prev, // [B, H]
    Rows<scalar_t> hn_out, // [B, H] gh_n + b_hn for backward; may be empty
    Rows<scalar_t> h_out); // [B, H]

template <typename scalar_t>
void gru_cell_backward(
    int64_t batch,
    int64_t hidden,
    int64_t gate_stride,
    Rows<const scalar_t> gates, // [B, 3H] r, z, n
    Rows<const scalar_t> hn, // [B, H] gh_n + b_hn
    Rows<const scalar_t> h_prev, // [B, H]
    Rows<const scalar_t> dh, // [B, H]
    Rows<const scalar_t> dh_carry, // [B, H] added to dh; may be empty
    Rows<scalar_t> dgates_x, // [B, 3H] gradient of gx
    Rows<scalar_t> dgates_h, // [B, 3H] gradient of gh (+ b_hh)
    Rows<scalar_t> dh_prev); // [B, H] the direct part z * dh

template <typename scalar_t>
void rnn_cell_forward(
    int64_t batch,
    int64_t hidden,
    bool relu,
    Rows<const scalar_t> gates, // [B, H] x W_ih^T
    Rows<const scalar_t> recurrent, // [B, H] h_{t-1} W_hh^T
    const scalar_t* bias, // [H] b_ih + b_hh
    Rows<scalar_t> h_out); // [B, H]

template <typename scalar_t>
void rnn_cell_backward(
    int64_t batch,
    int64_t hidden,
    bool relu,
    Rows<const scalar_t> h, // [B, H] output of the step
    Rows<const scalar_t> dh, // [B, H]
    Rows<const scalar_t> dh_carry, // [B, H] added to dh; may be empty
    Rows<scalar_t> dgates); // [B, H]

// out = a + b, row by row.
template <typename scalar_t>
void add_rows(
    int64_t batch,
    int64_t width,
    Rows<const scalar_t> a, // [B, width]
    Rows<const scalar_t> b, // [B, width]
    Rows<scalar_t> out); // [B, width]

} // namespace cpu
} // namespace deeprnn
