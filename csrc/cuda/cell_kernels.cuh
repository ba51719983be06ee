#pragma once

// Fused pointwise kernels of one time step for the CUDA backend: one launch
// covers both directions and every batch row of the step. A thread takes one
// hidden unit of one row of one direction (grid-stride loop), adds the
// biases, applies the gates with the cell math of common/cell_math.h (in
// at::opmath_type: float for half and bfloat16) and writes the results
// straight into their slices of the layer buffers.
//
// Rows are held sorted by decreasing length (see LengthsPlan): at step t,
// direction d works on rows [0, active[d]); the rows past a sequence's end
// write the zeros the contract asks for (output, reserve, gradients) and
// leave the running state alone.

#include "common/cell_math.h"

#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>

#include <cstdint>

namespace deeprnn {
namespace cuda {

// Element j of (time t, batch row b, direction d) of a layer buffer lives at
// data[t * time_stride + b * row_stride + d * dir_stride + j]:
//   time-major layer buffers [T, B, D*W]: (B*D*W, D*W, W)
//   per-direction state [D, B, W]:        (0, W, B*W) (no time)
template <typename T>
struct StepView {
  T* data = nullptr;
  int64_t time_stride = 0;
  int64_t row_stride = 0;
  int64_t dir_stride = 0;

  C10_HOST_DEVICE T* at(int64_t t, int64_t b, int64_t d) const {
    return data + t * time_stride + b * row_stride + d * dir_stride;
  }
  C10_HOST_DEVICE explicit operator bool() const {
    return data != nullptr;
  }
};

// One time step of both directions. The grid covers
// directions * batch * width elements.
struct StepInfo {
  int64_t directions = 1; // D
  int64_t batch = 0; // B
  int64_t width = 0; // units per row and direction (H, or P)
  int64_t time[2] = {0, 0}; // t of each direction at this step
  int64_t active[2] = {0, 0}; // rows running at time[d]
  // Backward only: the step whose state time[d] resumes from (t-1 forward,
  // t+1 reverse), and the rows [0, resumed[d]) that resume from it; rows
  // [resumed[d], active[d]) start at time[d] from h0 (and c0).
  int64_t previous[2] = {0, 0};
  int64_t resumed[2] = {0, 0};
};

// Where one thread's element sits in the step.
struct Element {
  int64_t d, b, j, t;
  bool active;
};

C10_DEVICE inline Element element_at(const StepInfo& step, int64_t index) {
  Element e;
  e.j = index % step.width;
  const int64_t row = index / step.width;
  e.b = row % step.batch;
  e.d = row / step.batch;
  e.t = step.time[e.d];
  e.active = e.b < step.active[e.d];
  return e;
}

#define DEEPRNN_STEP_LOOP(step, index)                                        \
  for (int64_t index = blockIdx.x * int64_t{blockDim.x} + threadIdx.x,        \
               index##_end = (step).directions * (step).batch * (step).width; \
       index < index##_end;                                                   \
       index += int64_t{blockDim.x} * gridDim.x)

// ---- forward ---------------------------------------------------------------

template <typename scalar_t>
struct LSTMForwardArgs {
  StepInfo step; // width H
  StepView<scalar_t> gates; // [T, B, D*4H] in: x W_ih^T; out: i, f, g, o
  StepView<const scalar_t> recurrent; // [D, B, 4H] h_{t-1} W_hh^T
  const scalar_t* bias = nullptr; // [D, 4H] b_ih + b_hh
  StepView<scalar_t> c_state; // [D, B, H] in: c_{t-1}; out: c_t
  StepView<scalar_t> c_saved; // [T, B, D*H] c_t for backward, or empty
  // [.., B, D*H] o * tanh(c_t): the layer output y without projection, the
  // pre-projection buffer with it.
  StepView<scalar_t> h_out;
  StepView<scalar_t> h_state; // [D, B, H] h_t for the next step; empty
                              // with projection (its GEMM writes it)
  StepView<scalar_t> y; // [T, B, D*P] layer output, zero past the end
  int64_t proj = 0; // P
  bool has_proj = false;
};

template <typename scalar_t>
__global__ void lstm_forward_step(LSTMForwardArgs<scalar_t> a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = a.step.width;
  DEEPRNN_STEP_LOOP(a.step, index) {
    const Element e = element_at(a.step, index);
    if (!e.active) {
      if (e.j < a.proj) {
        a.y.at(e.t, e.b, e.d)[e.j] = scalar_t(0);
      }
      if (a.c_saved) {
        a.c_saved.at(e.t, e.b, e.d)[e.j] = scalar_t(0);
      }
      if (a.has_proj) {
        a.h_out.at(e.t, e.b, e.d)[e.j] = scalar_t(0);
      }
      continue;
    }
    scalar_t* g = a.gates.at(e.t, e.b, e.d);
    const scalar_t* r = a.recurrent.at(0, e.b, e.d);
    const scalar_t* bias = a.bias + e.d * 4 * H;
    scalar_t* c = a.c_state.at(0, e.b, e.d) + e.j;
    const int64_t j = e.j;
    const auto out = cell::lstm_forward<acc_t>(
        acc_t(g[j]) + acc_t(r[j]) + acc_t(bias[j]),
        acc_t(g[H + j]) + acc_t(r[H + j]) + acc_t(bias[H + j]),
        acc_t(g[2 * H + j]) + acc_t(r[2 * H + j]) + acc_t(bias[2 * H + j]),
        acc_t(g[3 * H + j]) + acc_t(r[3 * H + j]) + acc_t(bias[3 * H + j]),
        acc_t(*c));
    g[j] = out.i;
    g[H + j] = out.f;
    g[2 * H + j] = out.g;
    g[3 * H + j] = out.o;
    *c = out.c;
    if (a.c_saved) {
      a.c_saved.at(e.t, e.b, e.d)[j] = out.c;
    }
    a.h_out.at(e.t, e.b, e.d)[j] = out.h;
    if (a.h_state) {
      a.h_state.at(0, e.b, e.d)[j] = out.h;
    }
  }
}

template <typename scalar_t>
struct GRUForwardArgs {
  StepInfo step; // width H
  StepView<scalar_t> gates; // [T, B, D*3H] in: x W_ih^T; out: r, z, n
  StepView<const scalar_t> recurrent; // [D, B, 3H] h_{t-1} W_hh^T
  const scalar_t* bias = nullptr; // [D, 3H] b_ih + (b_hr, b_hz, 0)
  const scalar_t* bias_hn = nullptr; // [D, H]
  StepView<scalar_t> h_state; // [D, B, H] in: h_{t-1}; out: h_t
  StepView<scalar_t> hn_saved; // [T, B, D*H] gh_n + b_hn, or empty
  StepView<scalar_t> y; // [T, B, D*H]
};

template <typename scalar_t>
__global__ void gru_forward_step(GRUForwardArgs<scalar_t> a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = a.step.width;
  DEEPRNN_STEP_LOOP(a.step, index) {
    const Element e = element_at(a.step, index);
    const int64_t j = e.j;
    if (!e.active) {
      a.y.at(e.t, e.b, e.d)[j] = scalar_t(0);
      if (a.hn_saved) {
        a.hn_saved.at(e.t, e.b, e.d)[j] = scalar_t(0);
      }
      continue;
    }
    scalar_t* g = a.gates.at(e.t, e.b, e.d);
    const scalar_t* r = a.recurrent.at(0, e.b, e.d);
    const scalar_t* bias = a.bias + e.d * 3 * H;
    scalar_t* h = a.h_state.at(0, e.b, e.d) + j;
    const auto out = cell::gru_forward<acc_t>(
        acc_t(g[j]) + acc_t(bias[j]),
        acc_t(g[H + j]) + acc_t(bias[H + j]),
        acc_t(g[2 * H + j]) + acc_t(bias[2 * H + j]),
        acc_t(r[j]),
        acc_t(r[H + j]),
        acc_t(r[2 * H + j]),
        acc_t(a.bias_hn[e.d * H + j]),
        acc_t(*h));
    g[j] = out.r;
    g[H + j] = out.z;
    g[2 * H + j] = out.n;
    if (a.hn_saved) {
      a.hn_saved.at(e.t, e.b, e.d)[j] = out.hn;
    }
    a.y.at(e.t, e.b, e.d)[j] = out.h;
    *h = out.h;
  }
}

template <typename scalar_t>
struct RNNForwardArgs {
  StepInfo step; // width H
  StepView<const scalar_t> gates; // [T, B, D*H] x W_ih^T
  StepView<const scalar_t> recurrent; // [D, B, H] h_{t-1} W_hh^T
  const scalar_t* bias = nullptr; // [D, H] b_ih + b_hh
  StepView<scalar_t> h_state; // [D, B, H] out: h_t
  StepView<scalar_t> y; // [T, B, D*H]
  bool relu = false;
};

template <typename scalar_t>
__global__ void rnn_forward_step(RNNForwardArgs<scalar_t> a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = a.step.width;
  DEEPRNN_STEP_LOOP(a.step, index) {
    const Element e = element_at(a.step, index);
    const int64_t j = e.j;
    if (!e.active) {
      a.y.at(e.t, e.b, e.d)[j] = scalar_t(0);
      continue;
    }
    const acc_t h = cell::rnn_forward<acc_t>(
        acc_t(a.gates.at(e.t, e.b, e.d)[j]) +
            acc_t(a.recurrent.at(0, e.b, e.d)[j]) + acc_t(a.bias[e.d * H + j]),
        a.relu);
    a.y.at(e.t, e.b, e.d)[j] = h;
    a.h_state.at(0, e.b, e.d)[j] = h;
  }
}

// ---- backward --------------------------------------------------------------
//
// Each kernel writes the step's gradient of the recurrent pre-activations
// twice: into the [T, B, D*G*H] buffer the weight-gradient GEMMs read after
// the loop, and into a [D, B, G*H] step buffer for the batched GEMM
// dh_{t-1} += dG_t W_hh of both directions. The carry dh of the active rows
// is consumed (LSTM, RNN: cleared; GRU: replaced by its direct part z * dh)
// so that the GEMM can always accumulate; the rows past the end get zero
// gradients and keep their carry.

template <typename scalar_t>
struct LSTMBackwardArgs {
  StepInfo step; // width H
  StepView<const scalar_t> gates; // [T, B, D*4H] i, f, g, o
  StepView<const scalar_t> cells; // [T, B, D*H] c_t
  StepView<const scalar_t> c_initial; // [D, B, H] c0 of the layer
  // Gradient of o * tanh(c_t): dy [T, B, D*H] without projection, the
  // back-projected [D, B, H] with it.
  StepView<const scalar_t> dh;
  StepView<scalar_t> dh_carry; // [D, B, H] added to dh and cleared; empty
                               // with projection
  StepView<scalar_t> dc; // [D, B, H] in: dL/dc_t; out: dL/dc_{t-1}
  StepView<scalar_t> dgates; // [T, B, D*4H]
  StepView<scalar_t> dgates_step; // [D, B, 4H]
};

template <typename scalar_t>
__global__ void lstm_backward_step(LSTMBackwardArgs<scalar_t> a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = a.step.width;
  DEEPRNN_STEP_LOOP(a.step, index) {
    const Element e = element_at(a.step, index);
    const int64_t j = e.j;
    scalar_t* dg = a.dgates.at(e.t, e.b, e.d);
    scalar_t* dgs = a.dgates_step.at(0, e.b, e.d);
    if (!e.active) {
      for (int64_t k = 0; k < 4; ++k) {
        dg[k * H + j] = scalar_t(0);
        dgs[k * H + j] = scalar_t(0);
      }
      continue;
    }
    const scalar_t* g = a.gates.at(e.t, e.b, e.d);
    const acc_t c_prev = e.b < a.step.resumed[e.d]
        ? acc_t(a.cells.at(a.step.previous[e.d], e.b, e.d)[j])
        : acc_t(a.c_initial.at(0, e.b, e.d)[j]);
    acc_t dh = a.dh.at(e.t, e.b, e.d)[j];
    if (a.dh_carry) {
      scalar_t* carry = a.dh_carry.at(0, e.b, e.d) + j;
      dh += acc_t(*carry);
      *carry = scalar_t(0);
    }
    scalar_t* dc = a.dc.at(0, e.b, e.d) + j;
    const auto out = cell::lstm_backward<acc_t>(
        g[j],
        g[H + j],
        g[2 * H + j],
        g[3 * H + j],
        a.cells.at(e.t, e.b, e.d)[j],
        c_prev,
        dh,
        acc_t(*dc));
    dg[j] = dgs[j] = out.di;
    dg[H + j] = dgs[H + j] = out.df;
    dg[2 * H + j] = dgs[2 * H + j] = out.dg;
    dg[3 * H + j] = dgs[3 * H + j] = out.do_;
    *dc = out.dc_prev;
  }
}

template <typename scalar_t>
struct GRUBackwardArgs {
  StepInfo step; // width H
  StepView<const scalar_t> gates; // [T, B, D*3H] r, z, n
  StepView<const scalar_t> hn; // [T, B, D*H] gh_n + b_hn
  StepView<const scalar_t> y; // [T, B, D*H] h_t: h_{t-1} of resumed rows
  StepView<const scalar_t> h_initial; // [D, B, H] h0 of the layer
  StepView<const scalar_t> dy; // [T, B, D*H]
  StepView<scalar_t> dh_carry; // [D, B, H] in: from t+1; out: z * dh
  StepView<scalar_t> dgates_x; // [T, B, D*3H] gradient of gx
  StepView<scalar_t> dgates_h; // [T, B, D*3H] gradient of gh (+ b_hh)
  StepView<scalar_t> dgates_step; // [D, B, 3H] dgates_h of this step
};

template <typename scalar_t>
__global__ void gru_backward_step(GRUBackwardArgs<scalar_t> a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = a.step.width;
  DEEPRNN_STEP_LOOP(a.step, index) {
    const Element e = element_at(a.step, index);
    const int64_t j = e.j;
    scalar_t* dgx = a.dgates_x.at(e.t, e.b, e.d);
    scalar_t* dgh = a.dgates_h.at(e.t, e.b, e.d);
    scalar_t* dgs = a.dgates_step.at(0, e.b, e.d);
    if (!e.active) {
      for (int64_t k = 0; k < 3; ++k) {
        dgx[k * H + j] = scalar_t(0);
        dgh[k * H + j] = scalar_t(0);
        dgs[k * H + j] = scalar_t(0);
      }
      continue;
    }
    const scalar_t* g = a.gates.at(e.t, e.b, e.d);
    const acc_t h_prev = e.b < a.step.resumed[e.d]
        ? acc_t(a.y.at(a.step.previous[e.d], e.b, e.d)[j])
        : acc_t(a.h_initial.at(0, e.b, e.d)[j]);
    scalar_t* carry = a.dh_carry.at(0, e.b, e.d) + j;
    const acc_t dh = acc_t(a.dy.at(e.t, e.b, e.d)[j]) + acc_t(*carry);
    const auto out = cell::gru_backward<acc_t>(
        g[j], g[H + j], g[2 * H + j], a.hn.at(e.t, e.b, e.d)[j], h_prev, dh);
    dgx[j] = out.dr;
    dgx[H + j] = out.dz;
    dgx[2 * H + j] = out.dn_x;
    dgh[j] = dgs[j] = out.dr;
    dgh[H + j] = dgs[H + j] = out.dz;
    dgh[2 * H + j] = dgs[2 * H + j] = out.dn_h;
    *carry = out.dh_prev;
  }
}

template <typename scalar_t>
struct RNNBackwardArgs {
  StepInfo step; // width H
  StepView<const scalar_t> y; // [T, B, D*H] h_t
  StepView<const scalar_t> dy; // [T, B, D*H]
  StepView<scalar_t> dh_carry; // [D, B, H] added to dy and cleared
  StepView<scalar_t> dgates; // [T, B, D*H]
  StepView<scalar_t> dgates_step; // [D, B, H]
  bool relu = false;
};

template <typename scalar_t>
__global__ void rnn_backward_step(RNNBackwardArgs<scalar_t> a) {
  using acc_t = at::opmath_type<scalar_t>;
  DEEPRNN_STEP_LOOP(a.step, index) {
    const Element e = element_at(a.step, index);
    const int64_t j = e.j;
    scalar_t* dg = a.dgates.at(e.t, e.b, e.d) + j;
    scalar_t* dgs = a.dgates_step.at(0, e.b, e.d) + j;
    if (!e.active) {
      *dg = *dgs = scalar_t(0);
      continue;
    }
    scalar_t* carry = a.dh_carry.at(0, e.b, e.d) + j;
    const acc_t dh = acc_t(a.dy.at(e.t, e.b, e.d)[j]) + acc_t(*carry);
    *carry = scalar_t(0);
    *dg = *dgs =
        cell::rnn_backward<acc_t>(acc_t(a.y.at(e.t, e.b, e.d)[j]), dh, a.relu);
  }
}

// LSTM with projection: the full gradient of the projected h_t, dy + carry,
// kept for dW_hr and multiplied back through W_hr by the caller.
template <typename scalar_t>
struct ProjectedGradArgs {
  StepInfo step; // width P
  StepView<const scalar_t> dy; // [T, B, D*P]
  StepView<scalar_t> dh_carry; // [D, B, P] added and cleared
  StepView<scalar_t> dh_total; // [T, B, D*P] out, zero past the end
};

template <typename scalar_t>
__global__ void projected_grad_step(ProjectedGradArgs<scalar_t> a) {
  using acc_t = at::opmath_type<scalar_t>;
  DEEPRNN_STEP_LOOP(a.step, index) {
    const Element e = element_at(a.step, index);
    const int64_t j = e.j;
    scalar_t* total = a.dh_total.at(e.t, e.b, e.d) + j;
    if (!e.active) {
      *total = scalar_t(0);
      continue;
    }
    scalar_t* carry = a.dh_carry.at(0, e.b, e.d) + j;
    *total = acc_t(a.dy.at(e.t, e.b, e.d)[j]) + acc_t(*carry);
    *carry = scalar_t(0);
  }
}

#undef DEEPRNN_STEP_LOOP

} // namespace cuda
} // namespace deeprnn
