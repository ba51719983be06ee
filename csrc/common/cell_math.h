#pragma once

// The cell math, written once for host and device. Every function works on
// one hidden unit of one batch row in the accumulation type `acc_t` (float
// for float/half/bfloat16, double for double); the backends only decide how
// the elements are laid out and iterated.
//
// Conventions (per direction, per step, H hidden units, gate blocks of H):
//   gx: input projection X W_ih^T + folded biases (see input_bias in cpu/)
//   gh: recurrent projection h_{t-1} W_hh^T (no bias)
//   LSTM gates i, f, g, o; GRU r, z, n with
//     n = tanh(gx_n + r * (gh_n + b_hn)),  h = (1 - z) * n + z * h_{t-1}

#include <c10/macros/Macros.h>

#include <cmath>

namespace deeprnn {
namespace cell {

// The reference activations. A backend may pass its own `Math` (same two
// static functions) to the cell functions below, e.g. a vectorisable
// approximation on the CPU; the cell algebra stays here, written once.
struct StdMath {
  template <typename acc_t>
  C10_HOST_DEVICE static acc_t sigmoid(acc_t x) {
    // exp of a negative argument never overflows, so both halves are stable
    // for large |x|.
    if (x >= acc_t(0)) {
      return acc_t(1) / (acc_t(1) + std::exp(-x));
    }
    const acc_t e = std::exp(x);
    return e / (acc_t(1) + e);
  }
  template <typename acc_t>
  C10_HOST_DEVICE static acc_t tanh(acc_t x) {
    return std::tanh(x);
  }
};

// ---- LSTM -----------------------------------------------------------------

template <typename acc_t>
struct LSTMForward {
  acc_t i, f, g, o, c, h; // activations, new cell, output before projection
};

template <typename acc_t, typename Math = StdMath>
C10_HOST_DEVICE inline LSTMForward<acc_t> lstm_forward(
    acc_t pre_i,
    acc_t pre_f,
    acc_t pre_g,
    acc_t pre_o,
    acc_t c_prev) {
  LSTMForward<acc_t> r;
  r.i = Math::sigmoid(pre_i);
  r.f = Math::sigmoid(pre_f);
  r.g = Math::tanh(pre_g);
  r.o = Math::sigmoid(pre_o);
  r.c = r.f * c_prev + r.i * r.g;
  r.h = r.o * Math::tanh(r.c);
  return r;
}

template <typename acc_t>
struct LSTMBackward {
  acc_t di, df, dg, do_, dc_prev; // gradients of the pre-activations
};

// dh: gradient of o * tanh(c) (after the projection's backward);
// dc: gradient flowing into c_t from step t+1.
template <typename acc_t, typename Math = StdMath>
C10_HOST_DEVICE inline LSTMBackward<acc_t> lstm_backward(
    acc_t i,
    acc_t f,
    acc_t g,
    acc_t o,
    acc_t c,
    acc_t c_prev,
    acc_t dh,
    acc_t dc) {
  const acc_t tanh_c = Math::tanh(c);
  const acc_t dc_total = dc + dh * o * (acc_t(1) - tanh_c * tanh_c);
  LSTMBackward<acc_t> r;
  r.do_ = dh * tanh_c * o * (acc_t(1) - o);
  r.di = dc_total * g * i * (acc_t(1) - i);
  r.df = dc_total * c_prev * f * (acc_t(1) - f);
  r.dg = dc_total * i * (acc_t(1) - g * g);
  r.dc_prev = dc_total * f;
  return r;
}

// ---- GRU ------------------------------------------------------------------

template <typename acc_t>
struct GRUForward {
  acc_t r, z, n, hn, h; // hn = gh_n + b_hn, kept for backward
};

template <typename acc_t, typename Math = StdMath>
C10_HOST_DEVICE inline GRUForward<acc_t> gru_forward(
    acc_t gx_r,
    acc_t gx_z,
    acc_t gx_n,
    acc_t gh_r,
    acc_t gh_z,
    acc_t gh_n,
    acc_t b_hn,
    acc_t h_prev) {
  GRUForward<acc_t> res;
  res.r = Math::sigmoid(gx_r + gh_r);
  res.z = Math::sigmoid(gx_z + gh_z);
  res.hn = gh_n + b_hn;
  res.n = Math::tanh(gx_n + res.r * res.hn);
  res.h = (acc_t(1) - res.z) * res.n + res.z * h_prev;
  return res;
}

template <typename acc_t>
struct GRUBackward {
  acc_t dr, dz, dn_x, dn_h, dh_prev; // dn_x for gx_n / b_in, dn_h for gh_n
};

template <typename acc_t>
C10_HOST_DEVICE inline GRUBackward<acc_t> gru_backward(
    acc_t r,
    acc_t z,
    acc_t n,
    acc_t hn,
    acc_t h_prev,
    acc_t dh) {
  GRUBackward<acc_t> res;
  const acc_t dn = dh * (acc_t(1) - z) * (acc_t(1) - n * n);
  res.dn_x = dn;
  res.dn_h = dn * r;
  res.dr = dn * hn * r * (acc_t(1) - r);
  res.dz = dh * (h_prev - n) * z * (acc_t(1) - z);
  res.dh_prev = dh * z;
  return res;
}

// ---- vanilla RNN ----------------------------------------------------------

template <typename acc_t, typename Math = StdMath>
C10_HOST_DEVICE inline acc_t rnn_forward(acc_t pre, bool relu) {
  if (relu) {
    // Written so that NaN propagates, as torch.relu does.
    return pre < acc_t(0) ? acc_t(0) : pre;
  }
  return Math::tanh(pre);
}

// Derivative expressed through the output h, which the layer output keeps.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t rnn_backward(acc_t h, acc_t dh, bool relu) {
  if (relu) {
    // !(h <= 0) rather than h > 0: the gradient passes a NaN unit, as
    // torch's threshold_backward lets it.
    return !(h <= acc_t(0)) ? dh : acc_t(0);
  }
  return dh * (acc_t(1) - h * h);
}

} // namespace cell
} // namespace deeprnn
