#include "cpu/cell_kernels.h"

#include "common/cell_math.h"
#include "cpu/fast_math.h"
#include "cpu/target_clones.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <type_traits>

namespace deeprnn {
namespace cpu {
namespace {

// Rows per task: enough elements that a thread's share outweighs the cost of
// waking it, so tiny batches stay on the calling thread. 4096 gate elements
// (e.g. 8 rows of an LSTM with H = 128) take a few microseconds with the
// vectorised activations; splitting the `long` benchmark row (B = 16) in
// two made its LSTM inference ~10% faster than at 16384, and no row slower.
int64_t grain_rows(int64_t width) {
  constexpr int64_t kElementsPerTask = 4096;
  return std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(width, 1));
}

template <typename scalar_t>
using acc = at::opmath_type<scalar_t>;

} // namespace

namespace {

template <typename scalar_t>
DEEPRNN_INLINE void lstm_forward_rows(
    int64_t b0,
    int64_t b1,
    int64_t hidden,
    int64_t gate_stride,
    Rows<scalar_t> gates,
    Rows<const scalar_t> recurrent,
    const scalar_t* bias,
    Rows<const scalar_t> c_prev,
    Rows<scalar_t> c_out,
    Rows<scalar_t> h_out) {
  using acc_t = acc<scalar_t>;
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t* g = gates.row(b);
    const scalar_t* r = recurrent.row(b);
    const scalar_t* cp = c_prev.row(b);
    scalar_t* co = c_out.row(b);
    scalar_t* ho = h_out.row(b);
#pragma GCC ivdep
    for (int64_t j = 0; j < hidden; ++j) {
      const auto out = cell::lstm_forward<acc_t, FastMath>(
          acc_t(g[j]) + acc_t(r[j]) + acc_t(bias[j]),
          acc_t(g[gate_stride + j]) + acc_t(r[gate_stride + j]) +
              acc_t(bias[gate_stride + j]),
          acc_t(g[2 * gate_stride + j]) + acc_t(r[2 * gate_stride + j]) +
              acc_t(bias[2 * gate_stride + j]),
          acc_t(g[3 * gate_stride + j]) + acc_t(r[3 * gate_stride + j]) +
              acc_t(bias[3 * gate_stride + j]),
          acc_t(cp[j]));
      g[j] = out.i;
      g[gate_stride + j] = out.f;
      g[2 * gate_stride + j] = out.g;
      g[3 * gate_stride + j] = out.o;
      co[j] = out.c;
      ho[j] = out.h;
    }
  }
}

DEEPRNN_FLOAT_CLONES void lstm_forward_rows_float(
    int64_t b0,
    int64_t b1,
    int64_t hidden,
    int64_t gate_stride,
    Rows<float> gates,
    Rows<const float> recurrent,
    const float* bias,
    Rows<const float> c_prev,
    Rows<float> c_out,
    Rows<float> h_out) {
  lstm_forward_rows<float>(
      b0,
      b1,
      hidden,
      gate_stride,
      gates,
      recurrent,
      bias,
      c_prev,
      c_out,
      h_out);
}

template <typename scalar_t>
DEEPRNN_INLINE void lstm_backward_rows(
    int64_t b0,
    int64_t b1,
    int64_t hidden,
    int64_t gate_stride,
    Rows<const scalar_t> gates,
    Rows<const scalar_t> c,
    Rows<const scalar_t> c_prev,
    Rows<const scalar_t> dh,
    Rows<const scalar_t> dh_carry,
    Rows<scalar_t> dc,
    Rows<scalar_t> dgates) {
  using acc_t = acc<scalar_t>;
  for (int64_t b = b0; b < b1; ++b) {
    const scalar_t* g = gates.row(b);
    const scalar_t* ct = c.row(b);
    const scalar_t* cp = c_prev.row(b);
    const scalar_t* dhr = dh.row(b);
    // Without a carry, dh is added to itself times zero: one loop shape
    // for both cases keeps it vectorisable.
    const scalar_t* carry = dh_carry ? dh_carry.row(b) : dhr;
    const acc_t carry_scale = dh_carry ? acc_t(1) : acc_t(0);
    scalar_t* dcr = dc.row(b);
    scalar_t* dg = dgates.row(b);
#pragma GCC ivdep
    for (int64_t j = 0; j < hidden; ++j) {
      const acc_t dh_total = acc_t(dhr[j]) + carry_scale * acc_t(carry[j]);
      const auto out = cell::lstm_backward<acc_t, FastMath>(
          g[j],
          g[gate_stride + j],
          g[2 * gate_stride + j],
          g[3 * gate_stride + j],
          ct[j],
          cp[j],
          dh_total,
          dcr[j]);
      dg[j] = out.di;
      dg[gate_stride + j] = out.df;
      dg[2 * gate_stride + j] = out.dg;
      dg[3 * gate_stride + j] = out.do_;
      dcr[j] = out.dc_prev;
    }
  }
}

DEEPRNN_FLOAT_CLONES void lstm_backward_rows_float(
    int64_t b0,
    int64_t b1,
    int64_t hidden,
    int64_t gate_stride,
    Rows<const float> gates,
    Rows<const float> c,
    Rows<const float> c_prev,
    Rows<const float> dh,
    Rows<const float> dh_carry,
    Rows<float> dc,
    Rows<float> dgates) {
  lstm_backward_rows<float>(
      b0, b1, hidden, gate_stride, gates, c, c_prev, dh, dh_carry, dc, dgates);
}

template <typename scalar_t>
DEEPRNN_INLINE void gru_forward_rows(
    int64_t b0,
    int64_t b1,
    int64_t hidden,
    int64_t gate_stride,
    Rows<scalar_t> gates,
    Rows<const scalar_t> recurrent,
    const scalar_t* bias,
    const scalar_t* b_hn,
    Rows<const scalar_t> h_prev,
    Rows<scalar_t> hn_out,
    Rows<scalar_t> h_out) {
  using acc_t = acc<scalar_t>;
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t* g = gates.row(b);
    const scalar_t* r = recurrent.row(b);
    const scalar_t* hp = h_prev.row(b);
    scalar_t* ho = h_out.row(b);
    // Inference keeps no hn: write it over h_out, which the next line of
    // the loop overwrites with h (same index), instead of branching.
    scalar_t* hn = hn_out ? hn_out.row(b) : ho;
#pragma GCC ivdep
    for (int64_t j = 0; j < hidden; ++j) {
      const auto out = cell::gru_forward<acc_t, FastMath>(
          acc_t(g[j]) + acc_t(bias[j]),
          acc_t(g[gate_stride + j]) + acc_t(bias[gate_stride + j]),
          acc_t(g[2 * gate_stride + j]) + acc_t(bias[2 * gate_stride + j]),
          r[j],
          r[gate_stride + j],
          r[2 * gate_stride + j],
          b_hn[j],
          hp[j]);
      g[j] = out.r;
      g[gate_stride + j] = out.z;
      g[2 * gate_stride + j] = out.n;
      hn[j] = out.hn;
      ho[j] = out.h;
    }
  }
}

DEEPRNN_FLOAT_CLONES void gru_forward_rows_float(
    int64_t b0,
    int64_t b1,
    int64_t hidden,
    int64_t gate_stride,
    Rows<float> gates,
    Rows<const float> recurrent,
    const float* bias,
    const float* b_hn,
    Rows<const float> h_prev,
    Rows<float> hn_out,
    Rows<float> h_out) {
  gru_forward_rows<float>(
      b0,
      b1,
      hidden,
      gate_stride,
      gates,
      recurrent,
      bias,
      b_hn,
      h_prev,
      hn_out,
      h_out);
}

template <typename scalar_t>
DEEPRNN_INLINE void rnn_forward_rows(
    int64_t b0,
    int64_t b1,
    int64_t hidden,
    bool relu,
    Rows<const scalar_t> gates,
    Rows<const scalar_t> recurrent,
    const scalar_t* bias,
    Rows<scalar_t> h_out) {
  using acc_t = acc<scalar_t>;
  // One loop per activation: with the choice inside, GCC 12 stopped
  // vectorising the tanh loop.
  auto rows = [&](auto relu_constant) {
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* g = gates.row(b);
      const scalar_t* r = recurrent.row(b);
      scalar_t* ho = h_out.row(b);
#pragma GCC ivdep
      for (int64_t j = 0; j < hidden; ++j) {
        ho[j] = cell::rnn_forward<acc_t, FastMath>(
            acc_t(g[j]) + acc_t(r[j]) + acc_t(bias[j]),
            decltype(relu_constant)::value);
      }
    }
  };
  if (relu) {
    rows(std::true_type{});
  } else {
    rows(std::false_type{});
  }
}

DEEPRNN_FLOAT_CLONES void rnn_forward_rows_float(
    int64_t b0,
    int64_t b1,
    int64_t hidden,
    bool relu,
    Rows<const float> gates,
    Rows<const float> recurrent,
    const float* bias,
    Rows<float> h_out) {
  rnn_forward_rows<float>(b0, b1, hidden, relu, gates, recurrent, bias, h_out);
}

} // namespace

template <typename scalar_t>
void lstm_cell_forward(
    int64_t batch,
    int64_t hidden,
    int64_t gate_stride,
    Rows<scalar_t> gates,
    Rows<const scalar_t> recurrent,
    const scalar_t* bias,
    Rows<const scalar_t> c_prev,
    Rows<scalar_t> c_out,
    Rows<scalar_t> h_out) {
  at::parallel_for(
      0, batch, grain_rows(4 * hidden), [&](int64_t b0, int64_t b1) {
        if constexpr (std::is_same_v<scalar_t, float>) {
          lstm_forward_rows_float(
              b0,
              b1,
              hidden,
              gate_stride,
              gates,
              recurrent,
              bias,
              c_prev,
              c_out,
              h_out);
        } else {
          lstm_forward_rows<scalar_t>(
              b0,
              b1,
              hidden,
              gate_stride,
              gates,
              recurrent,
              bias,
              c_prev,
              c_out,
              h_out);
        }
      });
}

template <typename scalar_t>
void lstm_cell_backward(
    int64_t batch,
    int64_t hidden,
    int64_t gate_stride,
    Rows<const scalar_t> gates,
    Rows<const scalar_t> c,
    Rows<const scalar_t> c_prev,
    Rows<const scalar_t> dh,
    Rows<const scalar_t> dh_carry,
    Rows<scalar_t> dc,
    Rows<scalar_t> dgates) {
  at::parallel_for(
      0, batch, grain_rows(4 * hidden), [&](int64_t b0, int64_t b1) {
        if constexpr (std::is_same_v<scalar_t, float>) {
          lstm_backward_rows_float(
              b0,
              b1,
              hidden,
              gate_stride,
              gates,
              c,
              c_prev,
              dh,
              dh_carry,
              dc,
              dgates);
        } else {
          lstm_backward_rows<scalar_t>(
              b0,
              b1,
              hidden,
              gate_stride,
              gates,
              c,
              c_prev,
              dh,
              dh_carry,
              dc,
              dgates);
        }
      });
}

template <typename scalar_t>
void gru_cell_forward(
    int64_t batch,
    int64_t hidden,
    int64_t gate_stride,
    Rows<scalar_t> gates,
    Rows<const scalar_t> recurrent,
    const scalar_t* bias,
    const scalar_t* b_hn,
    Rows<const scalar_t> h_prev,
    Rows<scalar_t> hn_out,
    Rows<scalar_t> h_out) {
  at::parallel_for(
      0, batch, grain_rows(3 * hidden), [&](int64_t b0, int64_t b1) {
        if constexpr (std::is_same_v<scalar_t, float>) {
          gru_forward_rows_float(
              b0,
              b1,
              hidden,
              gate_stride,
              gates,
              recurrent,
              bias,
              b_hn,
              h_prev,
              hn_out,
              h_out);
        } else {
          gru_forward_rows<scalar_t>(
              b0,
              b1,
              hidden,
              gate_stride,
              gates,
              recurrent,
              bias,
              b_hn,
              h_prev,
              hn_out,
              h_out);
        }
      });
}

template <typename scalar_t>
void gru_cell_backward(
    int64_t batch,
    int64_t hidden,
    int64_t gate_stride,
    Rows<const scalar_t> gates,
    Rows<const scalar_t> hn,
    Rows<const scalar_t> h_prev,
    Rows<const scalar_t> dh,
    Rows<const scalar_t> dh_carry,
    Rows<scalar_t> dgates_x,
    Rows<scalar_t> dgates_h,
    Rows<scalar_t> dh_prev) {
  using acc_t = acc<scalar_t>;
  at::parallel_for(
      0, batch, grain_rows(3 * hidden), [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* g = gates.row(b);
          const scalar_t* hnr = hn.row(b);
          const scalar_t* hp = h_prev.row(b);
          const scalar_t* dhr = dh.row(b);
          const scalar_t* carry = dh_carry ? dh_carry.row(b) : nullptr;
          scalar_t* dgx = dgates_x.row(b);
          scalar_t* dgh = dgates_h.row(b);
          scalar_t* dhp = dh_prev.row(b);
          for (int64_t j = 0; j < hidden; ++j) {
            const acc_t dh_total =
                acc_t(dhr[j]) + (carry ? acc_t(carry[j]) : acc_t(0));
            const auto out = cell::gru_backward<acc_t>(
                g[j],
                g[gate_stride + j],
                g[2 * gate_stride + j],
                hnr[j],
                hp[j],
                dh_total);
            dgx[j] = out.dr;
            dgx[gate_stride + j] = out.dz;
            dgx[2 * gate_stride + j] = out.dn_x;
            dgh[j] = out.dr;
            dgh[gate_stride + j] = out.dz;
            dgh[2 * gate_stride + j] = out.dn_h;
            dhp[j] = out.dh_prev;
          }
        }
      });
}

template <typename scalar_t>
void rnn_cell_forward(
    int64_t batch,
    int64_t hidden,
    bool relu,
    Rows<const scalar_t> gates,
    Rows<const scalar_t> recurrent,
    const scalar_t* bias,
    Rows<scalar_t> h_out) {
  at::parallel_for(0, batch, grain_rows(hidden), [&](int64_t b0, int64_t b1) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      rnn_forward_rows_float(
          b0, b1, hidden, relu, gates, recurrent, bias, h_out);
    } else {
      rnn_forward_rows<scalar_t>(
          b0, b1, hidden, relu, gates, recurrent, bias, h_out);
    }
  });
}

template <typename scalar_t>
void rnn_cell_backward(
    int64_t batch,
    int64_t hidden,
    bool relu,
    Rows<const scalar_t> h,
    Rows<const scalar_t> dh,
    Rows<const scalar_t> dh_carry,
    Rows<scalar_t> dgates) {
  using acc_t = acc<scalar_t>;
  at::parallel_for(0, batch, grain_rows(hidden), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* hr = h.row(b);
      const scalar_t* dhr = dh.row(b);
      const scalar_t* carry = dh_carry ? dh_carry.row(b) : nullptr;
      scalar_t* dg = dgates.row(b);
      for (int64_t j = 0; j < hidden; ++j) {
        const acc_t dh_total =
            acc_t(dhr[j]) + (carry ? acc_t(carry[j]) : acc_t(0));
        dg[j] = cell::rnn_backward<acc_t>(hr[j], dh_total, relu);
      }
    }
  });
}

template <typename scalar_t>
void add_rows(
    int64_t batch,
    int64_t width,
    Rows<const scalar_t> a,
    Rows<const scalar_t> b,
    Rows<scalar_t> out) {
  using acc_t = acc<scalar_t>;
  at::parallel_for(0, batch, grain_rows(width), [&](int64_t b0, int64_t b1) {
    for (int64_t row = b0; row < b1; ++row) {
      const scalar_t* ar = a.row(row);
      const scalar_t* br = b.row(row);
      scalar_t* o = out.row(row);
      for (int64_t j = 0; j < width; ++j) {
        o[j] = acc_t(ar[j]) + acc_t(br[j]);
      }
    }
  });
}

#define DEEPRNN_INSTANTIATE_CELLS(T)   \
  template void lstm_cell_forward<T>(  \
      int64_t,                         \
      int64_t,                         \
      int64_t,                         \
      Rows<T>,                         \
      Rows<const T>,                   \
      const T*,                        \
      Rows<const T>,                   \
      Rows<T>,                         \
      Rows<T>);                        \
  template void lstm_cell_backward<T>( \
      int64_t,                         \
      int64_t,                         \
      int64_t,                         \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<T>,                         \
      Rows<T>);                        \
  template void gru_cell_forward<T>(   \
      int64_t,                         \
      int64_t,                         \
      int64_t,                         \
      Rows<T>,                         \
      Rows<const T>,                   \
      const T*,                        \
      const T*,                        \
      Rows<const T>,                   \
      Rows<T>,                         \
      Rows<T>);                        \
  template void gru_cell_backward<T>(  \
      int64_t,                         \
      int64_t,                         \
      int64_t,                         \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<T>,                         \
      Rows<T>,                         \
      Rows<T>);                        \
  template void rnn_cell_forward<T>(   \
      int64_t,                         \
      int64_t,                         \
      bool,                            \
      Rows<const T>,                   \
      Rows<const T>,                   \
      const T*,                        \
      Rows<T>);                        \
  template void rnn_cell_backward<T>(  \
      int64_t,                         \
      int64_t,                         \
      bool,                            \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<const T>,                   \
      Rows<T>);                        \
  template void add_rows<T>(           \
      int64_t, int64_t, Rows<const T>, Rows<const T>, Rows<T>);

DEEPRNN_INSTANTIATE_CELLS(float)
DEEPRNN_INSTANTIATE_CELLS(double)
DEEPRNN_INSTANTIATE_CELLS(c10::BFloat16)
DEEPRNN_INSTANTIATE_CELLS(c10::Half)
#undef DEEPRNN_INSTANTIATE_CELLS

} // namespace cpu
} // namespace deeprnn
