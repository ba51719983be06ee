// CPU kernels of deeprnn::_rnn_forward and deeprnn::_rnn_backward.
//
// Driver shape (DESIGN.md §3): layers outside, time inside, both directions
// per step. In training, ONE GEMM per layer projects the input of every step
// for both directions, straight into the reserve; inference projects a chunk
// of steps per direction at a time into a cache-sized buffer. The time loop
// only does the recurrent product h W_hh^T per direction (W_hh packed once
// per layer where MKL allows) and one fused pointwise kernel that adds the
// biases and writes h_t straight into the layer output; with two directions
// and two or more threads, the directions of a step run on separate threads.
// Backward keeps only dh_{t-1} = dG_t W_hh in the loop; the weight gradients
// are GEMMs over all steps after it. Buffers are allocated per layer, never
// inside the time loop (the loop only takes views).
//
// Small float32 batches take a second time loop, the fused step (below):
// the whole loop in one parallel region, each thread owning a slice of the
// hidden units, one barrier per step, no ATen or BLAS call inside. Both
// loops fill the same buffers (reserve included), so a forward of one and
// a backward of the other combine.

#include "common/config.h"
#include "common/driver.h"
#include "common/layers.h"
#include "common/path_switches.h"
#include "cpu/buffer_cache.h"
#include "cpu/cell_kernels.h"
#include "cpu/packed_gemm.h"
#include "cpu/small_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace deeprnn {
namespace {

using at::Tensor;

// Runs f(d) for each direction. With two directions and more than one
// thread, each thread takes one direction (and its BLAS calls run
// single-threaded inside): a step then costs one fork/join instead of one per
// GEMM and per pointwise call, and the two directions overlap.
template <typename F>
void for_each_direction(int64_t directions, const F& f) {
  if (directions == 2 && at::get_num_threads() > 1 &&
      !at::in_parallel_region()) {
    at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
      for (int64_t d = begin; d < end; ++d) {
        f(d);
      }
    });
  } else {
    for (int64_t d = 0; d < directions; ++d) {
      f(d);
    }
  }
}

// Below this many rows per GEMM, MKL's packed path measured no faster
// (B = 1: slower) than its plain GEMM on this project's CPU benchmark.
constexpr int64_t kMinRowsForPacking = 32;

// One weight of each direction of `layer` (`weight`: &CellParams::w_hh or
// &CellParams::w_ih) packed for GEMMs of up to `rows` rows: forward
// multiplies by W^T (transpose), backward by W. Empty where MKL's packed
// GEMM is unavailable, scalar_t is not float, or `rows` is below
// kMinRowsForPacking.
template <typename scalar_t>
std::vector<std::optional<cpu::PackedWeight>> packed_weights(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    at::Tensor CellParams::*weight,
    bool transpose,
    int64_t rows) {
  std::vector<std::optional<cpu::PackedWeight>> packed(cfg.num_directions);
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu::PackedWeight::available() && rows >= kMinRowsForPacking) {
      for (const auto d : c10::irange(cfg.num_directions)) {
        packed[d].emplace(
            cells[layer * cfg.num_directions + d].*weight, rows, transpose);
      }
    }
  }
  return packed;
}

// out = a @ (packed weight of direction d) + beta * out when a packed weight
// exists (float only); returns false (and does nothing) otherwise. a and
// out: `rows` rows each (rows <= the packed row count), at their own
// strides. Raw rows, not tensors: the time loops call it every step, and
// an ATen view costs a dispatcher call.
template <typename scalar_t>
bool multiply_packed(
    const std::vector<std::optional<cpu::PackedWeight>>& packed,
    int64_t d,
    int64_t rows,
    cpu::Rows<const scalar_t> a,
    cpu::Rows<scalar_t> out,
    float beta) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (packed[d].has_value()) {
      packed[d]->multiply(rows, a.data, a.stride, out.data, out.stride, beta);
      return true;
    }
  }
  return false;
}

// Variable lengths (see LengthsPlan): at step t the sequences still running
// are rows [0, rows) of the sorted batch. Of those, rows [0, resumed) go on
// from the previous step and rows [resumed, rows) start from the initial
// state (every row at a direction's first step; in the reverse direction
// also the sequences whose last valid step is t).

// Zeroes rows [rows, B) of columns [column, column + width) of step `step`
// of sequence [*, B, *]: the sequences that have ended. (No view is made
// when none has: the time loops call this every step.)
void zero_finished_rows(
    const Tensor& sequence,
    int64_t step,
    int64_t rows,
    int64_t column,
    int64_t width) {
  const int64_t batch = sequence.size(1);
  if (rows < batch) {
    sequence.select(0, step)
        .narrow(0, rows, batch - rows)
        .narrow(1, column, width)
        .zero_();
  }
}

// Calls f(begin, end, from_initial) for the resumed rows and the starting
// rows, each range only when not empty.
template <typename F>
void for_each_row_range(int64_t resumed, int64_t rows, const F& f) {
  if (resumed > 0) {
    f(int64_t{0}, resumed, false);
  }
  if (rows > resumed) {
    f(resumed, rows, true);
  }
}

// Direction d at its `step`-th step of the forward (the reverse direction
// walks time backwards): at time t rows [0, rows) run, rows [0, resumed) go
// on from t_prev's state and the rest start from the initial state, and rows
// [finished, rows) end at t and hand their state to hy (and cy). Backward's
// step s of direction d is forward step T - 1 - s.
struct StepRows {
  int64_t t, t_prev, rows, resumed, finished;
};

StepRows step_rows(
    const LengthsPlan* plan, // null without lengths
    int64_t T,
    int64_t B,
    int64_t step,
    int64_t d) {
  // Rows still running at time t: a prefix of the batch, which the kernels
  // hold sorted by decreasing length (see LengthsPlan).
  auto active = [&](int64_t t) {
    return plan != nullptr ? plan->active[t] : (t < T ? B : 0);
  };
  const int64_t t = d == 0 ? step : T - 1 - step;
  const int64_t t_prev = d == 0 ? t - 1 : t + 1;
  const int64_t rows = active(t);
  return {
      t,
      t_prev,
      rows,
      step == 0 ? 0 : std::min(rows, active(t_prev)),
      d == 0 ? active(t + 1) : (step == T - 1 ? 0 : rows)};
}

// ---------------------------------------------------------------------------
// The fused small-batch step
//
// At small batches a step's arithmetic is a few microseconds, and the general
// loop's per-step costs (a BLAS call that re-checks and re-blocks its
// operands, the cell kernel's fork/join, ATen views) cost as much again.
// The fused loop runs a layer's whole time loop inside ONE parallel region:
// each thread owns a slice of the hidden units (all gates of them), keeps
// W_hh's rows for its slice packed in its own L2 cache, computes its part
// of h_{t-1} W_hh^T with a register-tiled kernel (cpu/small_gemm.h), applies
// the cell to its units, and meets the others at one barrier per step (every
// thread reads all of h_{t-1}). Inference also projects the input inside the
// region, a chunk of steps at a time, each thread its own gate columns
// (W_ih's rows packed the same way); training's projection is one GEMM over
// all steps before it, as in the general loop. No operator, allocation or
// BLAS call runs inside the region (the cell kernels' at::parallel_for runs
// inline there), so nothing in it can throw. Float32, batch <=
// fused_max_batch(), with or without lengths and LSTM projections (a second
// barrier per step: the projection reads every unit), where the packing pays
// (fused_step_applies). The rest takes the general loop.

// Above this batch the general loop wins where its GEMMs run through MKL
// (Intel CPUs, see cpu/packed_gemm.h): with the fused loop at batch 32 and
// 64 the LSTM inference of bench.py's stacked-bi, deep and fastrnns rows was
// 5-20% slower on 2 threads of an Intel Xeon (Emerald Rapids).
constexpr int64_t kFusedMaxBatchMkl = 16;
// Where they run through oneDNN (other CPUs) the fused loop won at every
// batch measured, on 2 threads of an AMD EPYC with AVX-512, fused against
// general (ms): LSTM deep (B = 32) inference 45.7 / 66.5, training 201 /
// 248; fastrnns (B = 64) LSTM inference 75.6 / 93.4, GRU 61.2 / 65.5;
// stacked-bi (B = 32) LSTM inference 45.4 / 55.1, GRU training 172 / 177;
// B = 128 (H = 256, 2 layers) LSTM inference 72.9 / 87.6, training 334 /
// 355; B = 256 LSTM inference 41.5 / 48.1.
constexpr int64_t kFusedMaxBatchOneDnn = 256;

int64_t fused_max_batch() {
  return cpu::PackedWeight::library() == cpu::PackedWeight::Library::kOneDnn
      ? kFusedMaxBatchOneDnn
      : kFusedMaxBatchMkl;
}

// Below this many multiply-adds per thread and step, a barrier costs more
// than a second thread saves. Measured with LSTM, B = 1, T = 2000 on this
// project's 2-core VM: at H = 64 (16K per thread) a team of two took 1.75
// us per step against 1.34 for one; at H = 128 (64K) 2.8 against 3.9.
constexpr int64_t kFusedMinWorkPerThread = int64_t{1} << 15;
// Units are dealt to threads in blocks of this many (one vector of floats).
constexpr int64_t kFusedUnitBlock = 16;

// The fused loop packs its weights on every call. Packing (a transposing
// copy into fresh pages) costs about as much as this many bytes of weights
// per row of the layer's steps (T x B rows) save; below that the general
// loop wins. Measured on this project's VM (2 threads, f32 inference, with
// the register-transposing pack_panel): LSTM H = 256, 2 layers (2 MiB of
// W_hh and W_ih per layer) broke even at T = 8 to 16 with B = 1 and T = 4
// to 8 with B = 8; LSTM and GRU H = 512 at B = 2 (8 and 6 MiB) still lost
// at T = 32 (by 7% and 5%). A rule in rows is only roughly right across
// batches, and errs towards the general loop, which never loses much at
// short T: at T = 1 the fused loop took 0.8 ms against its 0.23.
constexpr int64_t kFusedPanelBytesPerRow = int64_t{64} << 10;
// Beyond this many bytes of panels a layer's weights no longer stay in the
// threads' L2 caches, and the fused loop stopped winning: LSTM H = 1024,
// B = 1 (32 MiB) took 97 ms against the general loop's 87 at T = 200, and
// 2.5x as long at T = 16. (H = 512, 8 MiB, still won: 16.7 ms against 20.1
// at T = 200.)
constexpr int64_t kFusedMaxPanelBytes = int64_t{8} << 20;

// The bytes of weights the fused loop packs for a layer: W_hh (and W_hr) in
// both passes, plus W_ih (`input_size` columns) in an inference forward,
// which projects the input inside its region; pass 0 for training.
int64_t fused_panel_bytes(const RNNConfig& cfg, int64_t input_size) {
  const int64_t per_direction =
      cfg.gates * cfg.hidden_size * (cfg.proj_size + input_size) +
      (cfg.has_proj ? cfg.hidden_size * cfg.proj_size : 0);
  return cfg.num_directions * per_direction *
      static_cast<int64_t>(sizeof(float));
}

// Whether the fused loop runs this layer: float32, a small batch, enough
// steps to pay for the packing and weights that fit the caches. Training's
// forward and backward decide alike (input_size 0); either pass's loop works
// with the other's reserve.
template <typename scalar_t>
bool fused_step_applies(const RNNConfig& cfg, int64_t input_size) {
  const int64_t bytes = fused_panel_bytes(cfg, input_size);
  return std::is_same_v<scalar_t, float> && cfg.batch <= fused_max_batch() &&
      bytes <= kFusedMaxPanelBytes &&
      cfg.seq_len * cfg.batch * kFusedPanelBytesPerRow >= bytes &&
      cpu_fused_step_enabled();
}

// Threads for the fused loop: at most torch's intra-op thread count (one
// when already inside a parallel region), one per block of units, and
// enough work per thread to pay for a barrier.
int64_t fused_team_size(const RNNConfig& cfg) {
#ifdef _OPENMP
  if (at::in_parallel_region()) {
    return 1;
  }
  const int64_t work = cfg.num_directions * cfg.batch * cfg.gates *
      cfg.hidden_size * cfg.proj_size;
  const int64_t blocks =
      (cfg.hidden_size + kFusedUnitBlock - 1) / kFusedUnitBlock;
  // Never more threads than processors: a thread that waits at the
  // barrier for a descheduled one would only slow every step down.
  return std::max<int64_t>(
      1,
      std::min<int64_t>(
          {int64_t{at::get_num_threads()},
           int64_t{omp_get_num_procs()},
           blocks,
           work / kFusedMinWorkPerThread}));
#else
  (void)cfg;
  return 1;
#endif
}

// Runs f(thread, team) on a team of up to `threads` threads (an OpenMP
// parallel region; `team` is the size the runtime gave), or f(0, 1) on the
// calling thread.
template <typename F>
void run_team(int64_t threads, const F& f) {
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(static_cast <int>(threads))
    f(int64_t{omp_get_thread_num()}, int64_t{omp_get_num_threads()});
    return;
  }
#endif
  (void)threads;
  f(int64_t{0}, int64_t{1});
}

// The barrier of a team of `team` threads started by run_team.
inline void team_barrier(int64_t team) {
#ifdef _OPENMP
  if (team > 1) {
#pragma omp barrier
  }
#else
  (void)team;
#endif
}

// Units [first, second) of thread `thread` of `team`: blocks of 16 units
// dealt as evenly as possible (a thread may get none).
std::pair<int64_t, int64_t> unit_slice(
    int64_t hidden,
    int64_t thread,
    int64_t team) {
  const int64_t blocks = (hidden + kFusedUnitBlock - 1) / kFusedUnitBlock;
  return {
      std::min(hidden, blocks * thread / team * kFusedUnitBlock),
      std::min(hidden, blocks * (thread + 1) / team * kFusedUnitBlock)};
}

// The weights and initial states of one direction of a layer, as pointers
// and strides: what the fused loops read inside their parallel region.
struct FusedDirection {
  const float* w_hh; // [G*H, P]
  int64_t w_hh_rows, w_hh_cols; // strides
  const float* w_ih; // [G*H, I]
  int64_t w_ih_rows, w_ih_cols;
  const float* w_hr; // [P, H] (projection), else null
  int64_t w_hr_rows, w_hr_cols;
  cpu::Rows<const float> h_initial; // [B, P]
  cpu::Rows<const float> c_initial; // [B, H] (LSTM), else empty
};

std::vector<FusedDirection> fused_directions(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const Tensor& h0, // [L*D, B, P]
    const Tensor& c0) { // [L*D, B, H] (LSTM)
  const int64_t D = cfg.num_directions;
  std::vector<FusedDirection> dirs(D);
  for (const auto d : c10::irange(D)) {
    const CellParams& p = cells[layer * D + d];
    const Tensor h_init = h0.select(0, layer * D + d);
    dirs[d] = {
        p.w_hh.data_ptr<float>(),
        p.w_hh.stride(0),
        p.w_hh.stride(1),
        p.w_ih.data_ptr<float>(),
        p.w_ih.stride(0),
        p.w_ih.stride(1),
        cfg.has_proj ? p.w_hr.data_ptr<float>() : nullptr,
        cfg.has_proj ? p.w_hr.stride(0) : 0,
        cfg.has_proj ? p.w_hr.stride(1) : 0,
        {h_init.data_ptr<float>(), h_init.stride(0)},
        {}};
    if (cfg.mode == Mode::LSTM) {
      const Tensor c_init = c0.select(0, layer * D + d);
      dirs[d].c_initial = {c_init.data_ptr<float>(), c_init.stride(0)};
    }
  }
  return dirs;
}

// ---------------------------------------------------------------------------
// Forward

// The time loop of forward_layer on the fused path (see above): the same
// buffers and results as the general loop.
template <typename ChunkStart, typename GateRows>
void forward_steps_fused(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const Tensor& layer_input, // [T, B, I_l]
    const Tensor& h0, // [L*D, B, P]
    const Tensor& c0, // [L*D, B, H] (LSTM)
    const LayerReserve& saved,
    const Tensor& y, // [T, B, D*P] out
    const Tensor& gates, // the reserve's gates, or the inference chunks
    int64_t chunk_steps,
    const ChunkStart& chunk_start,
    const GateRows& gate_rows,
    const Tensor& bias_x, // [D, G*H]
    const Tensor& bias_hn, // [D, H] (GRU)
    const Tensor& recurrent, // [D, B, G*H] scratch
    const Tensor& cell_state, // [B, D*H] (LSTM inference)
    const Tensor& hidden_scratch, // [B, D*H] (projection, inference)
    const Tensor& hy, // [L*D, B, P] out
    const Tensor& cy, // [L*D, B, H] out (LSTM)
    const LengthsPlan* plan) { // null without lengths
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t H = cfg.hidden_size, P = cfg.proj_size, G = cfg.gates;
  const int64_t I = layer_input.size(2);
  const bool whole_sequence = saved.gates.defined();
  const bool relu = cfg.mode == Mode::RNN_RELU;
  const bool proj = cfg.has_proj;

  // Every pointer the region needs, taken before it (no ATen inside).
  const std::vector<FusedDirection> dirs =
      fused_directions(cfg, cells, layer, h0, c0);
  // A thread's packed weights, per direction and gate: W_hh's rows for its
  // units (depth P), then, in inference, W_ih's (depth I). Laid out by unit
  // so that slices never overlap, whatever size of team the runtime gives.
  // With a projection, each thread also owns a slice of its P outputs, with
  // W_hr's rows for them (depth H), laid out by output.
  const int64_t depth = P + (whole_sequence ? 0 : I);
  Tensor panels = cpu::cached_empty({D * G * depth * H}, layer_input.options());
  Tensor proj_panels =
      cpu::cached_empty({proj ? D * H * P : 0}, layer_input.options());
  float* const panels_ptr = panels.data_ptr<float>();
  float* const proj_panels_ptr = proj_panels.data_ptr<float>();
  const float* const x_ptr = layer_input.data_ptr<float>();
  float* const y_ptr = y.data_ptr<float>();
  float* const gates_ptr = gates.data_ptr<float>();
  float* const recurrent_ptr = recurrent.data_ptr<float>();
  const float* const bias_ptr = bias_x.data_ptr<float>();
  const float* const b_hn_ptr =
      bias_hn.defined() ? bias_hn.data_ptr<float>() : nullptr;
  float* const cells_ptr =
      saved.cells.defined() ? saved.cells.data_ptr<float>() : nullptr;
  float* const state_ptr =
      cell_state.defined() ? cell_state.data_ptr<float>() : nullptr;
  // o * tanh(c) before the projection: every step's in training (the
  // reserve's), else one step's.
  float* const hidden_ptr = !proj ? nullptr
      : saved.hidden.defined()    ? saved.hidden.data_ptr<float>()
                                  : hidden_scratch.data_ptr<float>();
  const int64_t hidden_step = saved.hidden.defined() ? B * D * H : 0;
  const int64_t y_row = D * P, cell_row = D * H;
  float* const hy_ptr = hy.data_ptr<float>();
  float* const cy_ptr = cfg.mode == Mode::LSTM ? cy.data_ptr<float>() : nullptr;

  run_team(fused_team_size(cfg), [&](int64_t thread, int64_t team) {
    // Plain variables, not structured bindings: lambdas capture them.
    const auto unit_range = unit_slice(H, thread, team);
    const int64_t j0 = unit_range.first, units = unit_range.second - j0;
    // The columns of y this thread writes: its units, or with a projection
    // its slice of the P outputs.
    const auto output_range = proj ? unit_slice(P, thread, team) : unit_range;
    const int64_t p0 = output_range.first, outputs = output_range.second - p0;
    float* const mine = panels_ptr + D * G * depth * j0;
    auto hh_panel = [&](int64_t d, int64_t g) {
      return mine + (d * G + g) * depth * units;
    };
    auto ih_panel = [&](int64_t d, int64_t g) {
      return hh_panel(d, g) + P * units;
    };
    auto hr_panel = [&](int64_t d) {
      return proj_panels_ptr + D * H * p0 + d * H * outputs;
    };
    for (int64_t d = 0; d < D; ++d) {
      const FusedDirection& w = dirs[d];
      for (int64_t g = 0; g < G && units > 0; ++g) {
        cpu::pack_panel(
            units,
            P,
            w.w_hh + (g * H + j0) * w.w_hh_rows,
            w.w_hh_rows,
            w.w_hh_cols,
            hh_panel(d, g));
        if (!whole_sequence) {
          cpu::pack_panel(
              units,
              I,
              w.w_ih + (g * H + j0) * w.w_ih_rows,
              w.w_ih_rows,
              w.w_ih_cols,
              ih_panel(d, g));
        }
      }
      if (proj && outputs > 0) {
        cpu::pack_panel(
            outputs,
            H,
            w.w_hr + p0 * w.w_hr_rows,
            w.w_hr_rows,
            w.w_hr_cols,
            hr_panel(d));
      }
    }

    auto y_at = [&](int64_t t, int64_t d) {
      return cpu::Rows<float>{y_ptr + t * B * y_row + d * P, y_row};
    };

    for (int64_t step = 0; step < T; ++step) {
      for (int64_t d = 0; d < D; ++d) {
        const FusedDirection& w = dirs[d];
        const StepRows at = step_rows(plan, T, B, step, d);
        const int64_t t = at.t, t_prev = at.t_prev, rows = at.rows;
        const int64_t resumed = at.resumed, finished = at.finished;
        if (!whole_sequence && step % chunk_steps == 0 && units > 0) {
          // This thread's gate columns of the chunk's input projection.
          const int64_t chunk = step / chunk_steps;
          const int64_t steps =
              std::min(T, (chunk + 1) * chunk_steps) - chunk * chunk_steps;
          const float* x = x_ptr + chunk_start(chunk, d) * B * I;
          float* out = gates_ptr + d * chunk_steps * B * G * H + j0;
          for (int64_t g = 0; g < G; ++g) {
            cpu::panel_gemm(
                steps * B,
                units,
                I,
                x,
                I,
                ih_panel(d, g),
                out + g * H,
                G * H,
                false);
          }
        }
        // The cell writes h (o * tanh(c) before a projection) here.
        const cpu::Rows<float> h_out = proj
            ? cpu::Rows<float>{hidden_ptr + t * hidden_step + d * H, cell_row}
                  .columns(j0)
            : y_at(t, d).columns(j0);
        const cpu::Rows<float> cells_t = cells_ptr != nullptr
            ? cpu::Rows<float>{cells_ptr + t * B * cell_row + d * H, cell_row}
                  .columns(j0)
            : cpu::Rows<float>{};
        // Finished sequences output zeros, and keep zeros in the reserve.
        for (int64_t b = rows; b < B; ++b) {
          std::fill_n(y_at(t, d).columns(p0).row(b), outputs, 0.0f);
          if (cells_t) {
            std::fill_n(cells_t.row(b), units, 0.0f);
          }
          if (proj && hidden_step > 0) {
            std::fill_n(h_out.row(b), units, 0.0f);
          }
        }
        if (rows == 0 || units == 0) {
          continue;
        }
        const cpu::Rows<const float> h_resumed = resumed > 0
            ? cpu::as_const(y_at(t_prev, d))
            : cpu::Rows<const float>{};
        auto h_source = [&](bool from_initial) {
          return from_initial ? w.h_initial : h_resumed;
        };
        float* const rec = recurrent_ptr + d * B * G * H + j0;
        for_each_row_range(
            resumed, rows, [&](int64_t begin, int64_t end, bool from_initial) {
              const cpu::Rows<const float> h_prev =
                  h_source(from_initial).from(begin);
              for (int64_t g = 0; g < G; ++g) {
                cpu::panel_gemm(
                    end - begin,
                    units,
                    P,
                    h_prev.data,
                    h_prev.stride,
                    hh_panel(d, g),
                    rec + begin * G * H + g * H,
                    G * H,
                    false);
              }
            });

        const cpu::Rows<float> step_gates = gate_rows(t, d).columns(j0);
        const cpu::Rows<const float> step_recurrent{rec, G * H};
        const float* bias = bias_ptr + d * G * H + j0;
        // The cell state c_t (LSTM): the reserve's in training, else the
        // running state, updated in place.
        cpu::Rows<float> c_out;
        cpu::Rows<const float> c_resumed;
        if (cfg.mode == Mode::LSTM) {
          c_out = cells_t
              ? cells_t
              : cpu::Rows<float>{state_ptr + d * H, cell_row}.columns(j0);
          if (resumed > 0) {
            c_resumed = cells_t
                ? cpu::Rows<
                      const float>{cells_ptr + t_prev * B * cell_row + d * H, cell_row}
                      .columns(j0)
                : cpu::as_const(c_out);
          }
        }
        switch (cfg.mode) {
          case Mode::LSTM:
            for_each_row_range(
                resumed,
                rows,
                [&](int64_t begin, int64_t end, bool from_initial) {
                  cpu::lstm_cell_forward<float>(
                      end - begin,
                      units,
                      H,
                      step_gates.from(begin),
                      step_recurrent.from(begin),
                      bias,
                      (from_initial ? w.c_initial.columns(j0) : c_resumed)
                          .from(begin),
                      c_out.from(begin),
                      h_out.from(begin));
                });
            // The final cell states of the sequences that end here.
            for (int64_t b = finished; b < rows; ++b) {
              std::copy_n(
                  c_out.row(b),
                  units,
                  cy_ptr + ((layer * D + d) * B + b) * H + j0);
            }
            break;
          case Mode::GRU:
            for_each_row_range(
                resumed,
                rows,
                [&](int64_t begin, int64_t end, bool from_initial) {
                  cpu::gru_cell_forward<float>(
                      end - begin,
                      units,
                      H,
                      step_gates.from(begin),
                      step_recurrent.from(begin),
                      bias,
                      b_hn_ptr + d * H + j0,
                      h_source(from_initial).columns(j0).from(begin),
                      cells_t.from(begin),
                      h_out.from(begin));
                });
            break;
          case Mode::RNN_TANH:
          case Mode::RNN_RELU:
            cpu::rnn_cell_forward<float>(
                rows,
                units,
                relu,
                cpu::as_const(step_gates),
                step_recurrent,
                bias,
                h_out);
            break;
        }
      }
      if (proj) {
        // h_t = W_hr (o * tanh(c_t)) needs every unit: a second barrier,
        // then each thread computes its outputs.
        team_barrier(team);
        for (int64_t d = 0; d < D && outputs > 0; ++d) {
          const StepRows at = step_rows(plan, T, B, step, d);
          if (at.rows == 0) {
            continue;
          }
          cpu::panel_gemm(
              at.rows,
              outputs,
              H,
              hidden_ptr + at.t * hidden_step + d * H,
              cell_row,
              hr_panel(d),
              y_at(at.t, d).columns(p0).data,
              y_row,
              false);
        }
      }
      // The final hidden states of the sequences that end here.
      for (int64_t d = 0; d < D && outputs > 0; ++d) {
        const StepRows at = step_rows(plan, T, B, step, d);
        for (int64_t b = at.finished; b < at.rows; ++b) {
          std::copy_n(
              y_at(at.t, d).columns(p0).row(b),
              outputs,
              hy_ptr + ((layer * D + d) * B + b) * P + p0);
        }
      }
      // Every thread reads all of h_t at the next step.
      team_barrier(team);
    }
  });
}

// The general loop copies W_hh^T to a contiguous matrix when the layer runs
// at least this many rows (T x B) of recurrent GEMM, else it multiplies by
// the transposed view. Measured on this project's VM (2 threads, MKL), the
// copy (torch's transpose copy: ~2.5 GB/s) pays for itself after 4-8 steps
// at B = 16, 35-45 at B = 4, 14-3500 at B = 1; at T = 1 it was 83% of a
// GRU layer with H = 1024 (10.5 of 12.7 ms).
constexpr int64_t kMinRowsForTransposedCopy = 256;

// Inference projects the input this many bytes of gates at a time (per
// direction): about an L2 cache.
constexpr int64_t kProjectionChunkBytes = int64_t{1} << 20;

template <typename scalar_t>
void forward_layer(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const Tensor& layer_input, // [T, B, I_l]
    const Tensor& h0, // [L*D, B, P]
    const Tensor& c0, // [L*D, B, H] (LSTM)
    const LayerReserve& saved, // pieces of the reserve, or undefined
    const Tensor& y, // [T, B, D*P] out: the layer output
    const Tensor& hy, // [L*D, B, P] out
    const Tensor& cy, // [L*D, B, H] out (LSTM)
    const LengthsPlan* plan) { // null without lengths
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t H = cfg.hidden_size, P = cfg.proj_size, G = cfg.gates;
  const auto opts = layer_input.options();
  const bool relu = cfg.mode == Mode::RNN_RELU;

  // The input projection x W_ih^T (the cell kernels add the biases).
  // Training keeps the gates of every step for backward, so it projects all
  // steps and both directions in one GEMM, straight into the reserve.
  // Inference projects a chunk of steps at a time into a small buffer that
  // stays in cache, instead of writing (and page-faulting) a [T, B, D*G*H]
  // array that is read once.
  const bool whole_sequence = saved.gates.defined();
  const int64_t chunk_steps = whole_sequence
      ? T
      : std::clamp<int64_t>(
            kProjectionChunkBytes /
                std::max<int64_t>(B * G * H * sizeof(scalar_t), 1),
            1,
            T);
  Tensor gates = whole_sequence
      ? saved.gates // [T, B, D*G*H]
      : cpu::cached_empty({D, chunk_steps * B, G * H}, opts);
  if (whole_sequence) {
    Tensor gates_2d = gates.view({T * B, D * G * H});
    const Tensor inputs_2d = layer_input.view({T * B, layer_input.size(2)});
    const Tensor weights_t = stacked_input_weights(cfg, cells, layer).t();
    if (!cpu::onednn_matmul_out(gates_2d, inputs_2d, weights_t, false)) {
      at::cpu::mm_out(gates_2d, inputs_2d, weights_t);
    }
  }
  // First time step of direction d's chunk `chunk` (the reverse direction
  // walks the chunks from the end).
  auto chunk_start = [&](int64_t chunk, int64_t d) {
    const int64_t end = std::min(T, (chunk + 1) * chunk_steps);
    return d == 0 ? chunk * chunk_steps : T - end;
  };
  const Tensor bias_x = input_bias(cfg, cells, layer, opts); // [D, G*H]
  const Tensor bias_hn = cfg.mode == Mode::GRU
      ? recurrent_bias(cfg, cells, layer, opts)
      : Tensor(); // [D, H]
  // Per-layer scratch, reused by every step.
  Tensor recurrent = at::empty({D, B, G * H}, opts); // h_{t-1} W_hh^T
  // Inference keeps only the running cell state; training keeps every c_t.
  Tensor cell_state;
  if (cfg.mode == Mode::LSTM && !saved.cells.defined()) {
    cell_state = at::empty({B, D * H}, opts);
  }
  Tensor hidden_scratch; // o * tanh(c) before the projection
  if (cfg.has_proj && !saved.hidden.defined()) {
    hidden_scratch = at::empty({B, D * H}, opts);
  }

  scalar_t* gates_ptr = gates.data_ptr<scalar_t>();
  scalar_t* y_ptr = y.data_ptr<scalar_t>();
  const scalar_t* const h0_ptr = h0.data_ptr<scalar_t>();
  scalar_t* const recurrent_ptr = recurrent.data_ptr<scalar_t>();
  const int64_t y_row = D * P; // row stride of y
  // Rows of direction d's gates at time t (in the chunk that holds t).
  auto gate_rows = [&](int64_t t, int64_t d) {
    if (whole_sequence) {
      return cpu::Rows<scalar_t>{
          gates_ptr + (t * B) * D * G * H + d * G * H, D * G * H};
    }
    const int64_t step = d == 0 ? t : T - 1 - t;
    const int64_t offset = t - chunk_start(step / chunk_steps, d);
    return cpu::Rows<scalar_t>{
        gates_ptr + (d * chunk_steps + offset) * B * G * H, G * H};
  };

  if (fused_step_applies<scalar_t>(
          cfg, whole_sequence ? 0 : layer_input.size(2))) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      forward_steps_fused(
          cfg,
          cells,
          layer,
          layer_input,
          h0,
          c0,
          saved,
          y,
          gates,
          chunk_steps,
          chunk_start,
          gate_rows,
          bias_x,
          bias_hn,
          recurrent,
          cell_state,
          hidden_scratch,
          hy,
          cy,
          plan);
      count_cpu_fused_step_layer(false);
    }
    return;
  }

  // The recurrent GEMM's weight, prepared once for all T steps: packed by
  // MKL where possible, else W_hh^T made contiguous where enough steps pay
  // for the copy (small GEMMs run up to twice as fast in BLAS's NN form as
  // on the transposed view), else the view.
  const auto packed_hh = packed_weights<scalar_t>(
      cfg, cells, layer, &CellParams::w_hh, true, cfg.batch);
  // Inference's chunks all multiply by W_ih^T: packed once for all of them
  // where there are several (a plain GEMM packs it again on every call).
  const auto packed_ih = !whole_sequence && chunk_steps < T
      ? packed_weights<scalar_t>(
            cfg, cells, layer, &CellParams::w_ih, true, chunk_steps * B)
      : std::vector<std::optional<cpu::PackedWeight>>(D);
  auto project_chunk = [&](int64_t chunk, int64_t d) {
    const int64_t start = chunk_start(chunk, d);
    const int64_t steps =
        std::min(T, (chunk + 1) * chunk_steps) - chunk * chunk_steps;
    Tensor out = gates.select(0, d).narrow(0, 0, steps * B);
    const Tensor x = layer_input.narrow(0, start, steps)
                         .reshape({steps * B, layer_input.size(2)});
    if (!multiply_packed<scalar_t>(
            packed_ih,
            d,
            steps * B,
            {x.data_ptr<scalar_t>(), x.stride(0)},
            {out.data_ptr<scalar_t>(), out.stride(0)},
            0.0f)) {
      const Tensor w_ih_t = cells[layer * D + d].w_ih.t();
      if (!cpu::onednn_matmul_out(out, x, w_ih_t, false)) {
        at::cpu::mm_out(out, x, w_ih_t);
      }
    }
  };
  std::vector<Tensor> w_hh_t(D);
  for (const auto d : c10::irange(D)) {
    if (!packed_hh[d].has_value()) {
      const Tensor view = cells[layer * D + d].w_hh.t(); // [P, G*H]
      w_hh_t[d] = T * B >= kMinRowsForTransposedCopy ? view.contiguous() : view;
    }
  }

  auto direction_step = [&](int64_t step, int64_t d) {
    const CellParams& p = cells[layer * D + d];
    const StepRows at = step_rows(plan, T, B, step, d);
    const int64_t t = at.t, t_prev = at.t_prev, rows = at.rows;
    const int64_t resumed = at.resumed, finished = at.finished;
    // Finished sequences output zeros. Their rows of the reserve are zeroed
    // too: backward's dW_hr GEMM reads every row of `hidden`, and the
    // reserve, an output of _rnn_forward, must not depend on what the
    // allocator left there.
    zero_finished_rows(y, t, rows, d * P, P);
    for (const Tensor* piece : {&saved.cells, &saved.hidden}) {
      if (piece->defined()) {
        zero_finished_rows(*piece, t, rows, d * H, H);
      }
    }
    if (rows == 0) {
      return;
    }
    auto for_each_range = [&](const auto& f) {
      for_each_row_range(resumed, rows, f);
    };

    // h_{t-1} of the rows starting from h0 and of those going on. Raw rows,
    // not ATen views: a view costs a dispatcher call, and the small steps of
    // deep stacks are short enough for a few per step to show.
    const cpu::Rows<const scalar_t> h_initial{
        h0_ptr + (layer * D + d) * h0.stride(0), h0.stride(1)}; // [B, P]
    const cpu::Rows<const scalar_t> h_resumed = resumed > 0
        ? cpu::Rows<const scalar_t>{y_ptr + (t_prev * B) * y_row + d * P, y_row}
        : cpu::Rows<const scalar_t>{}; // [B, P]
    scalar_t* const recurrent_d = recurrent_ptr + d * B * G * H; // [B, G*H]
    for_each_range([&](int64_t begin, int64_t end, bool from_initial) {
      if (multiply_packed<scalar_t>(
              packed_hh,
              d,
              end - begin,
              (from_initial ? h_initial : h_resumed).from(begin),
              {recurrent_d + begin * G * H, G * H},
              0.0f)) {
        return;
      }
      Tensor out_rows = recurrent.select(0, d).narrow(0, begin, end - begin);
      at::cpu::mm_out(
          out_rows,
          (from_initial ? h0.select(0, layer * D + d)
                        : y.select(0, t_prev).narrow(1, d * P, P))
              .narrow(0, begin, end - begin),
          w_hh_t[d]);
    });

    const scalar_t* bias_x_d = bias_x.data_ptr<scalar_t>() + d * G * H;
    const cpu::Rows<scalar_t> step_gates = gate_rows(t, d);
    cpu::Rows<const scalar_t> step_recurrent{recurrent_d, G * H};
    cpu::Rows<scalar_t> h_out{y_ptr + (t * B) * y_row + d * P, y_row};

    switch (cfg.mode) {
      case Mode::LSTM: {
        const cpu::Rows<const scalar_t> c_initial{
            c0.data_ptr<scalar_t>() + (layer * D + d) * c0.stride(0),
            c0.stride(1)};
        cpu::Rows<const scalar_t> c_resumed;
        cpu::Rows<scalar_t> c_out;
        if (saved.cells.defined()) {
          scalar_t* c_ptr = saved.cells.data_ptr<scalar_t>();
          c_out = {c_ptr + (t * B) * D * H + d * H, D * H};
          if (resumed > 0) {
            c_resumed = {c_ptr + (t_prev * B) * D * H + d * H, D * H};
          }
        } else {
          c_out = {cell_state.data_ptr<scalar_t>() + d * H, D * H};
          c_resumed = cpu::as_const(c_out);
        }
        cpu::Rows<scalar_t> pre_projection = h_out;
        if (cfg.has_proj) {
          pre_projection = saved.hidden.defined()
              ? cpu::Rows<
                    scalar_t>{saved.hidden.data_ptr<scalar_t>() + (t * B) * D * H + d * H, D * H}
              : cpu::Rows<scalar_t>{
                    hidden_scratch.data_ptr<scalar_t>() + d * H, D * H};
        }
        for_each_range([&](int64_t begin, int64_t end, bool from_initial) {
          cpu::lstm_cell_forward<scalar_t>(
              end - begin,
              H,
              H,
              step_gates.from(begin),
              step_recurrent.from(begin),
              bias_x_d,
              (from_initial ? c_initial : c_resumed).from(begin),
              c_out.from(begin),
              pre_projection.from(begin));
        });
        if (cfg.has_proj) {
          const Tensor& hidden_all = saved.hidden.defined()
              ? saved.hidden.select(0, t)
              : hidden_scratch;
          Tensor y_t = y.select(0, t).narrow(1, d * P, P).narrow(0, 0, rows);
          at::cpu::mm_out(
              y_t,
              hidden_all.narrow(1, d * H, H).narrow(0, 0, rows),
              p.w_hr.t());
        }
        if (finished < rows) {
          const Tensor& c_all =
              saved.cells.defined() ? saved.cells.select(0, t) : cell_state;
          cy.select(0, layer * D + d)
              .narrow(0, finished, rows - finished)
              .copy_(c_all.narrow(1, d * H, H)
                         .narrow(0, finished, rows - finished));
        }
        break;
      }
      case Mode::GRU: {
        cpu::Rows<scalar_t> hn_out;
        if (saved.cells.defined()) {
          hn_out = {
              saved.cells.data_ptr<scalar_t>() + (t * B) * D * H + d * H,
              D * H};
        }
        const scalar_t* b_hn = bias_hn.data_ptr<scalar_t>() + d * H;
        for_each_range([&](int64_t begin, int64_t end, bool from_initial) {
          const cpu::Rows<const scalar_t> h_prev_rows =
              from_initial ? h_initial : h_resumed;
          cpu::gru_cell_forward<scalar_t>(
              end - begin,
              H,
              H,
              step_gates.from(begin),
              step_recurrent.from(begin),
              bias_x_d,
              b_hn,
              h_prev_rows.from(begin),
              hn_out.from(begin),
              h_out.from(begin));
        });
        break;
      }
      case Mode::RNN_TANH:
      case Mode::RNN_RELU:
        cpu::rnn_cell_forward<scalar_t>(
            rows,
            H,
            relu,
            cpu::as_const(step_gates),
            step_recurrent,
            bias_x_d,
            h_out);
        break;
    }
    if (finished < rows) {
      hy.select(0, layer * D + d)
          .narrow(0, finished, rows - finished)
          .copy_(y.select(0, t)
                     .narrow(1, d * P, P)
                     .narrow(0, finished, rows - finished));
    }
  };
  for (const auto step : c10::irange(T)) {
    for_each_direction(D, [&](int64_t d) {
      if (!whole_sequence && step % chunk_steps == 0) {
        project_chunk(step / chunk_steps, d);
      }
      direction_step(step, d);
    });
  }
}

// ---------------------------------------------------------------------------
// Backward

// The time loop of backward_layer on the fused path (see the fused forward
// above): per step, each thread runs the cell backward on its own units
// (their columns of dG_x, dG_h, dc and the carry), then, after one barrier
// (the recurrent product needs every unit's dG_h), computes its columns of
// dh_{t-1} = dG_h W_hh with W_hh's columns for its units packed in its
// cache. The same buffers and results as the general loop.
void backward_steps_fused(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const Tensor& y, // [T, B, D*P] the layer's output
    const Tensor& h0, // [L*D, B, P]
    const Tensor& c0, // [L*D, B, H] (LSTM)
    const LayerReserve& saved,
    const Tensor& dy, // [T, B, D*P]
    const Tensor& dgates_x, // [T, B, D*G*H] out
    const Tensor& dgates_h, // [T, B, D*G*H] out (GRU; else dgates_x)
    const Tensor& dh_carry, // [D, B, P] in: dhy; out: dh0
    const Tensor& dc_carry, // [D, B, H] in: dcy; out: dc0 (LSTM)
    const Tensor& dh_total, // [T, B, D*P] out (projection)
    const Tensor& dh_pre_projection, // [D, B, H] scratch (projection)
    const LengthsPlan* plan) { // null without lengths
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t H = cfg.hidden_size, P = cfg.proj_size, G = cfg.gates;
  const bool relu = cfg.mode == Mode::RNN_RELU;
  const bool gru = cfg.mode == Mode::GRU;
  const bool proj = cfg.has_proj;

  // Every pointer the region needs, taken before it (no ATen inside).
  const std::vector<FusedDirection> dirs =
      fused_directions(cfg, cells, layer, h0, c0);
  // A thread's packed weights per direction: W_hh's columns for its slice of
  // the P outputs (depth G*H), laid out by output; with a projection also
  // W_hr's columns for its units (depth P), laid out by unit.
  Tensor panels = cpu::cached_empty({D * G * H * P}, y.options());
  Tensor proj_panels = cpu::cached_empty({proj ? D * P * H : 0}, y.options());
  float* const panels_ptr = panels.data_ptr<float>();
  float* const proj_panels_ptr = proj_panels.data_ptr<float>();
  const float* const y_ptr = y.data_ptr<float>();
  const float* const dy_ptr = dy.data_ptr<float>();
  // RNN keeps no gates (its backward needs only h_t).
  const float* const gates_ptr =
      saved.gates.defined() ? saved.gates.data_ptr<float>() : nullptr;
  const float* const cells_ptr =
      saved.cells.defined() ? saved.cells.data_ptr<float>() : nullptr;
  float* const dgx_ptr = dgates_x.data_ptr<float>();
  float* const dgh_ptr = dgates_h.data_ptr<float>();
  float* const carry_ptr = dh_carry.data_ptr<float>();
  float* const dc_ptr =
      dc_carry.defined() ? dc_carry.data_ptr<float>() : nullptr;
  float* const total_ptr = proj ? dh_total.data_ptr<float>() : nullptr;
  float* const dh_pre_ptr =
      proj ? dh_pre_projection.data_ptr<float>() : nullptr;
  const int64_t gate_row = D * G * H, y_row = D * P, cell_row = D * H;

  run_team(fused_team_size(cfg), [&](int64_t thread, int64_t team) {
    // Plain variables, not structured bindings: lambdas capture them.
    const auto unit_range = unit_slice(H, thread, team);
    const int64_t j0 = unit_range.first, units = unit_range.second - j0;
    // The columns of the carry (and of dh_total) this thread computes: its
    // units, or with a projection its slice of the P outputs.
    const auto output_range = proj ? unit_slice(P, thread, team) : unit_range;
    const int64_t p0 = output_range.first, outputs = output_range.second - p0;
    auto hh_panel = [&](int64_t d) {
      return panels_ptr + D * G * H * p0 + d * G * H * outputs;
    };
    auto hr_panel = [&](int64_t d) {
      return proj_panels_ptr + D * P * j0 + d * P * units;
    };
    for (int64_t d = 0; d < D; ++d) {
      const FusedDirection& w = dirs[d];
      if (outputs > 0) {
        // Column p of W_hh is row p of the panel's matrix, depth G*H.
        cpu::pack_panel(
            outputs,
            G * H,
            w.w_hh + p0 * w.w_hh_cols,
            w.w_hh_cols,
            w.w_hh_rows,
            hh_panel(d));
      }
      if (proj && units > 0) {
        cpu::pack_panel(
            units,
            P,
            w.w_hr + j0 * w.w_hr_cols,
            w.w_hr_cols,
            w.w_hr_rows,
            hr_panel(d));
      }
    }

    for (int64_t step = 0; step < T; ++step) {
      // Backward visits the steps in the opposite order of forward.
      auto rows_of = [&](int64_t d) {
        return step_rows(plan, T, B, T - 1 - step, d);
      };
      auto carry_of = [&](int64_t d) {
        return cpu::Rows<float>{carry_ptr + d * B * P, P};
      };
      auto dy_at = [&](int64_t t, int64_t d) {
        return cpu::Rows<const float>{dy_ptr + t * B * y_row + d * P, y_row};
      };
      auto total_at = [&](int64_t t, int64_t d) {
        return cpu::Rows<float>{total_ptr + t * B * y_row + d * P, y_row};
      };
      if (proj) {
        // The full gradient of each h_t = dy_t + carry on this thread's
        // outputs (kept for dW_hr); the step below reads all of them.
        for (int64_t d = 0; d < D; ++d) {
          const StepRows at = rows_of(d);
          const int64_t t = at.t, rows = at.rows;
          const cpu::Rows<float> total = total_at(t, d).columns(p0);
          for (int64_t b = rows; b < B; ++b) {
            std::fill_n(total.row(b), outputs, 0.0f);
          }
          if (rows > 0 && outputs > 0) {
            cpu::add_rows<float>(
                rows,
                outputs,
                dy_at(t, d).columns(p0),
                cpu::as_const(carry_of(d).columns(p0)),
                total);
          }
        }
        team_barrier(team);
      }
      for (int64_t d = 0; d < D; ++d) {
        const FusedDirection& w = dirs[d];
        const StepRows at = rows_of(d);
        const int64_t t = at.t, t_prev = at.t_prev, rows = at.rows;
        const int64_t resumed = at.resumed;
        const cpu::Rows<float> dgx_t =
            cpu::Rows<float>{dgx_ptr + t * B * gate_row + d * G * H, gate_row}
                .columns(j0);
        const cpu::Rows<float> dgh_t =
            cpu::Rows<float>{dgh_ptr + t * B * gate_row + d * G * H, gate_row}
                .columns(j0);
        // Finished sequences get no gradient (the weight-gradient GEMMs
        // after the loop read every row).
        for (int64_t b = rows; b < B; ++b) {
          for (int64_t g = 0; g < G; ++g) {
            std::fill_n(dgx_t.row(b) + g * H, units, 0.0f);
            std::fill_n(dgh_t.row(b) + g * H, units, 0.0f);
          }
        }
        if (rows == 0 || units == 0) {
          continue;
        }
        // The gradient of this thread's units of h (before a projection):
        // dy_t + carry, or with a projection dh_total W_hr.
        cpu::Rows<const float> dh = dy_at(t, d).columns(j0);
        cpu::Rows<const float> dh_carry_rows =
            cpu::as_const(carry_of(d).columns(j0));
        if (proj) {
          float* const dh_pre = dh_pre_ptr + d * B * H + j0;
          cpu::panel_gemm(
              rows,
              units,
              P,
              total_at(t, d).data,
              y_row,
              hr_panel(d),
              dh_pre,
              H,
              false);
          dh = {dh_pre, H};
          dh_carry_rows = {};
        }
        const cpu::Rows<const float> gates_t = gates_ptr != nullptr
            ? cpu::Rows<
                  const float>{gates_ptr + t * B * gate_row + d * G * H, gate_row}
                  .columns(j0)
            : cpu::Rows<const float>{};
        auto cells_at = [&](int64_t time) {
          return cpu::Rows<const float>{
              cells_ptr + time * B * cell_row + d * H, cell_row}
              .columns(j0);
        };
        switch (cfg.mode) {
          case Mode::LSTM: {
            const cpu::Rows<const float> c_resumed =
                resumed > 0 ? cells_at(t_prev) : cpu::Rows<const float>{};
            const cpu::Rows<float> dc =
                cpu::Rows<float>{dc_ptr + d * B * H, H}.columns(j0);
            for_each_row_range(
                resumed,
                rows,
                [&](int64_t begin, int64_t end, bool from_initial) {
                  cpu::lstm_cell_backward<float>(
                      end - begin,
                      units,
                      H,
                      gates_t.from(begin),
                      cells_at(t).from(begin),
                      (from_initial ? w.c_initial.columns(j0) : c_resumed)
                          .from(begin),
                      dh.from(begin),
                      dh_carry_rows.from(begin),
                      dc.from(begin),
                      dgx_t.from(begin));
                });
            break;
          }
          case Mode::GRU: {
            const cpu::Rows<float> carry = carry_of(d).columns(j0);
            const cpu::Rows<const float> h_resumed = resumed > 0
                ? cpu::Rows<
                      const float>{y_ptr + t_prev * B * y_row + d * P, y_row}
                      .columns(j0)
                : cpu::Rows<const float>{};
            // Writes the direct part z * dh into the carry; the recurrent
            // product below adds the part through W_hh.
            for_each_row_range(
                resumed,
                rows,
                [&](int64_t begin, int64_t end, bool from_initial) {
                  cpu::gru_cell_backward<float>(
                      end - begin,
                      units,
                      H,
                      gates_t.from(begin),
                      cells_at(t).from(begin),
                      (from_initial ? w.h_initial.columns(j0) : h_resumed)
                          .from(begin),
                      dh.from(begin),
                      cpu::as_const(carry).from(begin),
                      dgx_t.from(begin),
                      dgh_t.from(begin),
                      carry.from(begin));
                });
            break;
          }
          case Mode::RNN_TANH:
          case Mode::RNN_RELU:
            cpu::rnn_cell_backward<float>(
                rows,
                units,
                relu,
                cpu::Rows<const float>{y_ptr + t * B * y_row + d * P, y_row}
                    .columns(j0),
                dh,
                dh_carry_rows,
                dgx_t);
            break;
        }
      }
      // The recurrent product reads every thread's dG_h of this step.
      team_barrier(team);
      for (int64_t d = 0; d < D && outputs > 0; ++d) {
        const StepRows at = rows_of(d);
        const int64_t t = at.t, rows = at.rows;
        if (rows == 0) {
          continue;
        }
        // dh_{t-1} = dG_h W_hh on the running rows; GRU's carry already
        // holds the direct part: accumulate onto it.
        cpu::panel_gemm(
            rows,
            outputs,
            G * H,
            dgh_ptr + t * B * gate_row + d * G * H,
            gate_row,
            hh_panel(d),
            carry_ptr + d * B * P + p0,
            P,
            gru);
      }
    }
  });
}

// The general backward loop keeps the gradients of the pre-activations
// (dG_x, dG_h, dh_total) for about this many bytes of steps at a time, and
// turns each full chunk into its share of the weight gradients and dx. The
// buffers, reused chunk after chunk, stay below glibc's mmap threshold (32
// MiB at most), so after the first call they come from the heap already
// mapped, where [T, B, D*G*H] arrays as large as the reserve's gates were
// mapped and page-faulted afresh by every call (on the project's VM ~12 ms
// per 39 MiB array: `fastrnns` GRU and LSTM backward ran 8-10% faster
// chunked). Smaller chunks measured slower there, the weight-gradient GEMMs
// wanting long sums: 1 MiB took 20% longer, 4-8 MiB 2-5%.
constexpr int64_t kBackwardChunkBytes = int64_t{16} << 20;

int64_t backward_chunk_steps(const RNNConfig& cfg, int64_t element_size) {
  const int64_t gate_buffers = cfg.mode == Mode::GRU ? 2 : 1;
  const int64_t step_bytes = cfg.batch * cfg.num_directions *
      (gate_buffers * cfg.gates * cfg.hidden_size +
       (cfg.has_proj ? cfg.proj_size : 0)) *
      element_size;
  const int64_t setting = cpu_backward_chunk_bytes();
  const int64_t bytes = setting > 0 ? setting : kBackwardChunkBytes;
  return std::clamp<int64_t>(
      bytes / std::max<int64_t>(step_bytes, 1), 1, cfg.seq_len);
}

template <typename scalar_t>
void backward_layer(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const Tensor& layer_input, // [T, B, I_l]
    const Tensor& y, // [T, B, D*P] this layer's output
    const Tensor& h0, // [L*D, B, P]
    const Tensor& c0, // [L*D, B, H] (LSTM)
    const LayerReserve& saved,
    const Tensor& dy, // [T, B, D*P] gradient of y
    const Tensor& dhy, // [L*D, B, P]
    const Tensor& dcy, // [L*D, B, H] (LSTM)
    bool need_input_grad,
    bool need_param_grads,
    Tensor& dx, // out: [T, B, I_l] if need_input_grad
    const Tensor& dhx, // out: [L*D, B, P] or undefined
    const Tensor& dcx, // out: [L*D, B, H] or undefined
    std::vector<Tensor>& dparams, // out, flat like params
    const LengthsPlan* plan) { // null without lengths
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t H = cfg.hidden_size, P = cfg.proj_size, G = cfg.gates;
  const auto opts = y.options();
  const bool relu = cfg.mode == Mode::RNN_RELU;
  const bool gru = cfg.mode == Mode::GRU;
  const bool lstm = cfg.mode == Mode::LSTM;

  // The fused loop (float, small batches) replaces the time loop below.
  const bool fused = fused_step_applies<scalar_t>(cfg, 0);

  // Gradients of the pre-activations: dG_x feeds W_ih, b_ih and dx; dG_h
  // feeds W_hh, b_hh and the recurrence. They differ only for GRU (the n
  // gate's recurrent part is scaled by r). With projection also dh_total,
  // the full gradient of each projected h_t (for dW_hr). The general loop
  // keeps them for a chunk of steps and turns each full chunk into its share
  // of the weight gradients and dx (add_chunk_gradients); the fused loop
  // keeps every step.
  const int64_t chunk_steps =
      fused ? T : backward_chunk_steps(cfg, sizeof(scalar_t));
  Tensor dgates_x = cpu::cached_empty({chunk_steps, B, D * G * H}, opts);
  Tensor dgates_h =
      gru ? cpu::cached_empty({chunk_steps, B, D * G * H}, opts) : dgates_x;
  Tensor dh_total = cfg.has_proj
      ? cpu::cached_empty({chunk_steps, B, D * P}, opts)
      : Tensor();
  // Gradient flowing from step t+1 into h_t (and c_t), per direction.
  // (dhy, dcy are contiguous, so these row blocks clone contiguous.)
  Tensor dh_carry = dhy.narrow(0, layer * D, D).clone(); // [D, B, P]
  Tensor dc_carry =
      lstm ? dcy.narrow(0, layer * D, D).clone() : Tensor(); // [D, B, H]
  // With projection, the gradient of o * tanh(c_t) of the current step.
  Tensor dh_pre_projection =
      cfg.has_proj ? at::empty({D, B, H}, opts) : Tensor(); // per direction

  // Chunk k holds the backward steps [k * chunk_steps, ...), i.e. direction
  // d's times [first, first + steps) in time order (the forward direction
  // walks them downwards).
  auto step_chunk = [&](int64_t chunk) {
    const int64_t begin = chunk * chunk_steps;
    const int64_t steps = std::min(chunk_steps, T - begin);
    return StepChunk{steps, {T - begin - steps, begin}};
  };

  const int64_t gate_row = D * G * H;
  const int64_t y_row = D * P;
  const int64_t cell_row = D * H;
  auto at_step = [&](const Tensor& buffer,
                     int64_t t,
                     int64_t d,
                     int64_t width,
                     int64_t row) {
    if (!buffer.defined()) {
      return cpu::Rows<scalar_t>{};
    }
    return cpu::Rows<scalar_t>{
        buffer.data_ptr<scalar_t>() + (t * B) * row + d * width, row};
  };
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (fused) {
      backward_steps_fused(
          cfg,
          cells,
          layer,
          y,
          h0,
          c0,
          saved,
          dy,
          dgates_x,
          dgates_h,
          dh_carry,
          dc_carry,
          dh_total,
          dh_pre_projection,
          plan);
      count_cpu_fused_step_layer(true);
    }
  }

  // dh_{t-1} = dG_t W_hh: W_hh packed once for all T steps (MKL, float).
  const auto packed_hh = fused
      ? std::vector<std::optional<cpu::PackedWeight>>(D)
      : packed_weights<scalar_t>(
            cfg, cells, layer, &CellParams::w_hh, false, cfg.batch);

  // dG_h at each row's first step (where it read h0), for dW_hh's
  // initial-state term after the loop: the chunks no longer hold it.
  const Tensor dgh_initial =
      need_param_grads && !fused ? at::empty({D, B, G * H}, opts) : Tensor();
  if (need_input_grad && !fused) {
    // Two directions' chunks cover different steps and add into dx.
    dx = cpu::cached_empty({T, B, layer_input.size(2)}, opts);
    if (D == 2 && chunk_steps < T) {
      dx.zero_();
    }
  }
  std::vector<bool> written(dparams.size(), false);

  auto direction_step = [&](int64_t step, int64_t d) {
    const CellParams& p = cells[layer * D + d];
    // Backward visits the steps in the opposite order of forward.
    const StepRows at = step_rows(plan, T, B, T - 1 - step, d);
    const int64_t t = at.t, t_prev = at.t_prev, rows = at.rows;
    const int64_t resumed = at.resumed;
    // Step t's row in the chunk buffers.
    const int64_t slot = t - step_chunk(step / chunk_steps).first[d];
    // Finished sequences get no gradient here, and the weight-gradient GEMMs
    // read every row.
    zero_finished_rows(dgates_x, slot, rows, d * G * H, G * H);
    if (gru) {
      zero_finished_rows(dgates_h, slot, rows, d * G * H, G * H);
    }
    if (cfg.has_proj) {
      zero_finished_rows(dh_total, slot, rows, d * P, P);
    }
    if (rows == 0) {
      return;
    }
    auto for_each_range = [&](const auto& f) {
      for_each_row_range(resumed, rows, f);
    };

    // Raw rows rather than ATen views, as in forward_layer's step.
    const cpu::Rows<const scalar_t> h_initial_rows{
        h0.data_ptr<scalar_t>() + (layer * D + d) * h0.stride(0),
        h0.stride(1)}; // [B, P]
    const cpu::Rows<const scalar_t> h_resumed_rows = resumed > 0
        ? cpu::as_const(at_step(y, t_prev, d, P, y_row))
        : cpu::Rows<const scalar_t>{};
    const auto dy_t = cpu::as_const(at_step(dy, t, d, P, y_row));
    const cpu::Rows<scalar_t> carry_rows{
        dh_carry.data_ptr<scalar_t>() + d * B * P, P}; // [B, P]
    const auto dgx_t = at_step(dgates_x, slot, d, G * H, gate_row);
    const auto dgh_t = at_step(dgates_h, slot, d, G * H, gate_row);
    const auto gates_t =
        cpu::as_const(at_step(saved.gates, t, d, G * H, gate_row));

    switch (cfg.mode) {
      case Mode::LSTM: {
        const cpu::Rows<const scalar_t> c_initial{
            c0.data_ptr<scalar_t>() + (layer * D + d) * c0.stride(0),
            c0.stride(1)};
        const cpu::Rows<const scalar_t> c_resumed = resumed > 0
            ? cpu::as_const(at_step(saved.cells, t_prev, d, H, cell_row))
            : cpu::Rows<const scalar_t>{};
        const auto c_t = cpu::as_const(at_step(saved.cells, t, d, H, cell_row));
        const cpu::Rows<scalar_t> dc_rows{
            dc_carry.data_ptr<scalar_t>() + d * B * H, H};
        cpu::Rows<const scalar_t> dh_rows = dy_t;
        cpu::Rows<const scalar_t> dh_carry_rows = cpu::as_const(carry_rows);
        if (cfg.has_proj) {
          const auto total = at_step(dh_total, slot, d, P, y_row);
          cpu::add_rows<scalar_t>(
              rows, P, dy_t, cpu::as_const(carry_rows), total);
          Tensor dh_pre_d = dh_pre_projection.select(0, d).narrow(0, 0, rows);
          at::cpu::mm_out(
              dh_pre_d,
              dh_total.select(0, slot).narrow(1, d * P, P).narrow(0, 0, rows),
              p.w_hr);
          dh_rows = {dh_pre_d.data_ptr<scalar_t>(), H};
          dh_carry_rows = {};
        }
        for_each_range([&](int64_t begin, int64_t end, bool from_initial) {
          cpu::lstm_cell_backward<scalar_t>(
              end - begin,
              H,
              H,
              gates_t.from(begin),
              c_t.from(begin),
              (from_initial ? c_initial : c_resumed).from(begin),
              dh_rows.from(begin),
              dh_carry_rows.from(begin),
              dc_rows.from(begin),
              dgx_t.from(begin));
        });
        break;
      }
      case Mode::GRU: {
        const auto hn_t =
            cpu::as_const(at_step(saved.cells, t, d, H, cell_row));
        // Writes the direct part z * dh into the carry; the GEMM below
        // adds the part through W_hh.
        for_each_range([&](int64_t begin, int64_t end, bool from_initial) {
          cpu::gru_cell_backward<scalar_t>(
              end - begin,
              H,
              H,
              gates_t.from(begin),
              hn_t.from(begin),
              (from_initial ? h_initial_rows : h_resumed_rows).from(begin),
              dy_t.from(begin),
              cpu::as_const(carry_rows).from(begin),
              dgx_t.from(begin),
              dgh_t.from(begin),
              carry_rows.from(begin));
        });
        break;
      }
      case Mode::RNN_TANH:
      case Mode::RNN_RELU:
        cpu::rnn_cell_backward<scalar_t>(
            rows,
            H,
            relu,
            cpu::as_const(at_step(y, t, d, P, y_row)),
            dy_t,
            cpu::as_const(carry_rows),
            dgx_t);
        break;
    }
    auto dgh_step = [&] {
      return dgates_h.select(0, slot)
          .narrow(1, d * G * H, G * H)
          .narrow(0, 0, rows);
    };
    if (dgh_initial.defined() && rows > resumed) {
      dgh_initial.select(0, d)
          .narrow(0, resumed, rows - resumed)
          .copy_(dgh_step().narrow(0, resumed, rows - resumed));
    }
    // GRU's carry already holds the direct part z * dh: accumulate onto it.
    if (multiply_packed<scalar_t>(
            packed_hh,
            d,
            rows,
            cpu::as_const(dgh_t),
            carry_rows,
            gru ? 1.0f : 0.0f)) {
      return;
    }
    Tensor carry_active = dh_carry.select(0, d).narrow(0, 0, rows);
    if (gru) {
      at::cpu::addmm_out(carry_active, carry_active, dgh_step(), p.w_hh);
    } else {
      at::cpu::mm_out(carry_active, dgh_step(), p.w_hh);
    }
  };
  for (const auto step : c10::irange(fused ? 0 : T)) {
    for_each_direction(D, [&](int64_t d) { direction_step(step, d); });
    if (step == T - 1 || (step + 1) % chunk_steps == 0) {
      add_chunk_gradients(
          cfg,
          cells,
          layer,
          layer_input,
          y,
          saved,
          dgates_x,
          dgates_h,
          dh_total,
          step_chunk(step / chunk_steps),
          need_param_grads,
          need_input_grad ? dx : Tensor(),
          dparams,
          written);
    }
  }

  for (const auto d : c10::irange(D)) {
    if (dhx.defined()) {
      dhx.select(0, layer * D + d).copy_(dh_carry.select(0, d));
    }
    if (dcx.defined()) {
      dcx.select(0, layer * D + d).copy_(dc_carry.select(0, d));
    }
  }

  if (fused) {
    layer_weight_and_input_gradients(
        cfg,
        cells,
        layer,
        layer_input,
        y,
        h0,
        saved,
        dgates_x,
        dgates_h,
        dh_total,
        need_input_grad,
        need_param_grads,
        dx,
        dparams,
        plan);
  } else if (need_param_grads) {
    for (const auto d : c10::irange(D)) {
      add_initial_state_gradient(
          cfg, layer, d, h0, dgh_initial.select(0, d), dparams, written);
    }
  }
}

struct CpuBackend {
  static constexpr const char* kForwardName = "deeprnn_forward";
  static constexpr const char* kBackwardName = "deeprnn_backward";
  static int guard(c10::Device) {
    return 0; // one device: nothing to switch
  }
  // The reserve and a layer's output between layers, from the buffer cache:
  // the caller frees them (the reserve after backward), and the next call
  // reuses their pages (cpu/buffer_cache.h).
  static Tensor empty_buffer(
      at::IntArrayRef sizes,
      const at::TensorOptions& opts) {
    return cpu::cached_empty(sizes, opts);
  }
  template <typename scalar_t, typename... Args>
  static void forward_layer(Args&&... args) {
    deeprnn::forward_layer<scalar_t>(std::forward<Args>(args)...);
  }
  template <typename scalar_t, typename... Args>
  static void backward_layer(Args&&... args) {
    deeprnn::backward_layer<scalar_t>(std::forward<Args>(args)...);
  }
};

} // namespace

TORCH_LIBRARY_IMPL(deeprnn, CPU, m) {
  m.impl("_rnn_forward", &rnn_forward<CpuBackend>);
  m.impl("_rnn_backward", &rnn_backward<CpuBackend>);
}

} // namespace deeprnn
