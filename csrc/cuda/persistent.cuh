#pragma once

// The persistent kernels of one layer (DESIGN.md §3 item 5, the first fast
// paths): ONE cooperative launch runs every time step of both directions of
// a layer's forward (or of its backward time loop), each block keeps its
// slice of W_hh in shared memory for the whole sequence, and the grid
// synchronises once per step.
//
// Why: the general path (cuda/rnn_cuda.cu) launches a batched GEMM and a
// pointwise kernel per step and reads W_hh from L2/HBM every step; at small
// batch a step is a few microseconds of launch latency and weight traffic
// for a few thousand multiply-adds. Here a step costs one grid barrier, the
// read of h_{t-1} (B*H values from L2) per block, and the math.
//
// Work split: block b of the grid serves direction d = b / blocks_per_dir
// and the hidden units [j0, j0 + units) of it (`Slice`), i.e. ALL G gates
// of those units, so that the cell update of a unit needs nothing from
// another block. Its W_hh rows (G*units rows of H, gate-major: smem row
// k*U + u is W_hh row k*H + j0 + u) are loaded once. Per step and per tile
// of tile_rows batch rows:
//   1. h_{t-1} of the tile's running rows -> shared memory (as acc_t),
//   2. the recurrent pre-activations h_{t-1} W_hh^T of the block's rows:
//      `team` consecutive lanes share one W row and kRowGroup batch rows,
//      split the H products between them and add up with warp shuffles,
//   3. the cell update (common/cell_math.h, the same as the general path's
//      kernels in cuda/cell_kernels.cuh), writing gates, c_t (or GRU's
//      W_hn h + b_hn), h_t into the layer output and into the next state
//      buffer, exactly where the general path writes them: the reserve is
//      the same, so the general backward runs on it unchanged.
// then one grid.sync(). h_{t-1} and h_t live in two buffers (ping-pong), so
// a block that still reads h_{t-1} never sees a neighbour's h_t: one
// barrier per step is enough. Rows past a sequence's end (lengths) write
// the zeros of the contract and copy their state into the next buffer.
//
// The per-block work is written as __host__ __device__ functions over an
// `Exec` that runs one phase for all threads of a block and the barrier
// between phases; on the GPU it is the block itself (cuda/persistent.cu),
// and a host emulation can run the same functions with sequential loops
// (its blocks one after another for each step, the grid barrier between
// steps), which is how the index arithmetic was checked without a GPU.
//
// The backward (see BackwardParams below) has the same grid with W_hh's
// columns on chip instead of its rows. The stack kernel (see Wavefront
// below) runs the blocks of every layer of a unidirectional stack in one
// grid, each layer one time step behind the layer below.
//
// Fits (see choose_geometry): no LSTM projection, and the W_hh slices of a
// co-resident grid fit in shared memory. By the chooser's arithmetic for an
// H100 (132 SMs, 227 KiB per block), the largest hidden sizes that fit,
// forward / backward:
//              one direction          two directions
//   LSTM f32   1312 / 1112            924 / 848
//   LSTM bf16  1792 / 1452            1280 / 1122
//   GRU  f32   1452 / 1320            1056 / 990
//   RNN  f32   2496 / 2496            1792 / 1792
// Everything else takes the general path, per layer and per pass.

#include "common/cell_math.h"
#include "common/config.h"
#include "common/layers.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

// `#pragma unroll` for the device pass only (the host compiler warns).
#ifdef __CUDA_ARCH__
#define DEEPRNN_UNROLL _Pragma("unroll")
#else
#define DEEPRNN_UNROLL
#endif

namespace deeprnn {
namespace cuda {
namespace persistent {

// Batch rows per team output: each lane keeps kRowGroup partial sums, so a
// W value read from shared memory serves that many rows.
constexpr int64_t kRowGroup = 4;
// Largest tile of batch rows held in shared memory at once.
constexpr int64_t kMaxTileRows = 32;
constexpr int kThreads = 256;

enum class Cell : int { LSTM = 0, GRU = 1, RNN_TANH = 2, RNN_RELU = 3 };

// Which kernel a geometry is for. Both keep a slice of W_hh on chip and
// compute a product of `rows` outputs of length `k` per batch row:
//   forward:  rows = G*U (all gates of the block's units), k = H:
//             h_{t-1} W_hh^T for the block's rows of W_hh;
//   backward: rows = U (the block's units of dh), k = G*H:
//             dG_t W_hh for the block's columns of W_hh.
enum class Pass : int { Forward = 0, Backward = 1 };

// How one layer is cut into blocks; chosen on the host.
struct Geometry {
  int64_t units = 0; // U: hidden units per block (the last one may have less)
  int64_t blocks_per_direction = 0; // ceil(H / U)
  int64_t rows = 0; // outputs of the on-chip product per batch row
  int64_t k = 0; // length of each of them
  int64_t tile_rows = 0; // batch rows per tile, a multiple of kRowGroup
  int64_t team = 1; // lanes per W row (a power of 2, <= 32)
  int64_t w_stride = 0; // elements between W rows in shared memory
  int64_t h_stride = 0; // acc_t elements between vector rows in shared memory
  int64_t threads = kThreads;
  // Byte offsets in shared memory: results [tile_rows, rows] acc_t, the
  // vector tile (h_{t-1} or dG_t) [tile_rows, h_stride] acc_t, and
  // W [rows, w_stride] scalar_t. The stack kernels (wavefront, below) add a
  // second weight slice [rows, w_stride] at x_offset (0: none).
  int64_t pre_offset = 0, h_offset = 0, w_offset = 0, x_offset = 0;
  int64_t shared_bytes = 0;
};

inline int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// The layout of one block's shared memory for `units` per block;
// `weight_slices` 2 for the stack kernels, whose second slice has the shape
// of the first (forward: the block's rows of W_ih, the layer's input being
// as wide as its output; backward: its columns of the next layer's W_ih).
inline Geometry make_geometry(
    Pass pass,
    int64_t hidden,
    int64_t gates,
    int64_t batch,
    int64_t units,
    int64_t tile_rows,
    int64_t scalar_size,
    int64_t acc_size,
    int64_t threads = kThreads,
    int64_t weight_slices = 1) {
  Geometry g;
  g.units = units;
  g.blocks_per_direction = (hidden + units - 1) / units;
  g.rows = pass == Pass::Forward ? gates * units : units;
  g.k = pass == Pass::Forward ? hidden : gates * hidden;
  g.tile_rows = tile_rows;
  g.threads = threads;
  const int64_t groups = std::min(round_up(batch, kRowGroup), tile_rows) /
      kRowGroup; // row groups of a full tile
  // Lanes per output: enough outputs for every thread, at most a warp.
  int64_t team = 1;
  while (team < 32 && 2 * team * g.rows * groups <= threads) {
    team *= 2;
  }
  g.team = team;
  // Teams of a warp read `team` consecutive k of consecutive W rows; a row
  // stride of `team` 4-byte words modulo 32 puts them in distinct banks.
  const int64_t row_bytes = round_up(g.k * scalar_size, 128) +
      (team % 32) * std::max<int64_t>(4, scalar_size);
  g.w_stride = (row_bytes + scalar_size - 1) / scalar_size;
  g.h_stride = g.k + 1;
  g.pre_offset = 0;
  g.h_offset = round_up(tile_rows * g.rows * acc_size, 16);
  g.w_offset = g.h_offset + round_up(tile_rows * g.h_stride * acc_size, 16);
  g.shared_bytes = g.w_offset + g.rows * g.w_stride * scalar_size;
  if (weight_slices == 2) {
    g.x_offset = round_up(g.shared_bytes, 16);
    g.shared_bytes = g.x_offset + g.rows * g.w_stride * scalar_size;
  }
  return g;
}

// The geometry with the fewest units per block (most parallel) whose grid
// is co-resident: at most one block per multiprocessor to start with (every
// block reads all of h_{t-1} (or dG_t) each step, so fewer, fuller blocks
// mean less L2 traffic and a cheaper barrier), more units per block where
// that does not fit. `blocks_per_sm(shared_bytes)` is the occupancy of the
// kernel; nullopt when nothing fits. `min_units` > 0 starts the search there
// (fewer, fuller blocks: a tuning knob, see DEEPRNN_CUDA_FAST_PATH_UNITS).
// `groups` of ceil(H / U) blocks each: the directions of a layer, or the
// layers of a stack (with `weight_slices` 2).
inline std::optional<Geometry> choose_geometry(
    Pass pass,
    int64_t hidden,
    int64_t groups,
    int64_t gates,
    int64_t batch,
    int64_t scalar_size,
    int64_t acc_size,
    int64_t sm_count,
    int64_t max_shared_per_block,
    const std::function<int64_t(int64_t)>& blocks_per_sm,
    int64_t min_units = 0,
    int64_t weight_slices = 1) {
  if (hidden <= 0 || batch <= 0 || sm_count <= 0) {
    return std::nullopt;
  }
  const int64_t first = std::min(
      hidden,
      std::max<int64_t>(
          {int64_t{1},
           (groups * hidden + sm_count - 1) / sm_count,
           min_units}));
  int64_t previous_blocks = -1;
  for (int64_t units = first; units <= hidden; ++units) {
    const int64_t blocks = groups * ((hidden + units - 1) / units);
    if (blocks == previous_blocks) {
      continue; // same grid, more shared memory: never better
    }
    previous_blocks = blocks;
    auto make = [&](int64_t tile) {
      return make_geometry(
          pass,
          hidden,
          gates,
          batch,
          units,
          tile,
          scalar_size,
          acc_size,
          kThreads,
          weight_slices);
    };
    int64_t tile = std::min(round_up(batch, kRowGroup), kMaxTileRows);
    Geometry g = make(tile);
    while (g.shared_bytes > max_shared_per_block && tile > kRowGroup) {
      tile = std::max(kRowGroup, tile / 2);
      g = make(tile);
    }
    if (g.shared_bytes > max_shared_per_block) {
      return std::nullopt; // more units per block need even more
    }
    if (blocks_per_sm(g.shared_bytes) * sm_count >= blocks) {
      return g;
    }
  }
  return std::nullopt;
}

// Everything the kernel reads, as plain pointers (all contiguous).
template <typename scalar_t>
struct ForwardParams {
  Cell cell = Cell::LSTM;
  int64_t T = 0, B = 0, H = 0, D = 1, G = 1;
  Geometry geo;
  const scalar_t* w_hh = nullptr; // [D, G*H, H]
  scalar_t* gates = nullptr; // [T, B, D*G*H] in: x W_ih^T; out: activations
  const scalar_t* bias = nullptr; // [D, G*H] folded biases (input_bias)
  const scalar_t* bias_hn = nullptr; // [D, H] GRU's b_hn
  scalar_t* h_buffers = nullptr; // [2, D, B, H] h_{t-1} / h_t, ping-pong
  scalar_t* c_state = nullptr; // [D, B, H] LSTM c, in place
  scalar_t* c_saved = nullptr; // [T, B, D*H] LSTM c_t / GRU gh_n+b_hn, or null
  scalar_t* y = nullptr; // [T, B, D*H] the layer output
  const int64_t* active = nullptr; // [T + 1] rows running at t, or null
};

// The direction and hidden units one block serves.
struct Slice {
  int64_t d = 0, j0 = 0, units = 0;
};

template <typename Params>
C10_HOST_DEVICE inline Slice slice_of(const Params& p, int64_t block) {
  Slice s;
  s.d = block / p.geo.blocks_per_direction;
  s.j0 = (block % p.geo.blocks_per_direction) * p.geo.units;
  s.units = p.H - s.j0 < p.geo.units ? p.H - s.j0 : p.geo.units;
  return s;
}

// A load that another block's store (before the grid barrier) is certain to
// reach: through L2, past the multiprocessor's own (incoherent) L1.
template <typename T>
C10_HOST_DEVICE inline T load_coherent(const T* address) {
#ifdef __CUDA_ARCH__
  T value;
  if constexpr (sizeof(T) == 2) {
    const unsigned short bits =
        __ldcg(reinterpret_cast<const unsigned short*>(address));
    memcpy(&value, &bits, 2);
  } else if constexpr (sizeof(T) == 4) {
    const unsigned int bits =
        __ldcg(reinterpret_cast<const unsigned int*>(address));
    memcpy(&value, &bits, 4);
  } else {
    static_assert(sizeof(T) == 8, "2, 4 or 8 bytes");
    const unsigned long long bits =
        __ldcg(reinterpret_cast<const unsigned long long*>(address));
    memcpy(&value, &bits, 8);
  }
  return value;
#else
  return *address;
#endif
}

template <typename scalar_t>
struct Shared {
  using acc_t = at::opmath_type<scalar_t>;
  // Forward: rows = G*U, k = H; backward: rows = U, k = G*H (Geometry).
  acc_t* pre; // [tile_rows, rows] the products (h_{t-1} W_hh^T, dG_t W_hh)
  acc_t* h; // [tile_rows, h_stride] the tile's vectors (h_{t-1}, dG_t)
  scalar_t* w; // [rows, w_stride] the block's slice of W_hh (or W_hh^T)
  scalar_t* w_x; // [rows, w_stride] the stack kernels' W_ih slice, or null

  C10_HOST_DEVICE Shared(const Geometry& geo, unsigned char* base)
      : pre(reinterpret_cast<acc_t*>(base + geo.pre_offset)),
        h(reinterpret_cast<acc_t*>(base + geo.h_offset)),
        w(reinterpret_cast<scalar_t*>(base + geo.w_offset)),
        w_x(geo.x_offset != 0 ? reinterpret_cast<scalar_t*>(base + geo.x_offset)
                              : nullptr) {}

  // The same tiles with W_ih's slice as the product's weights.
  C10_HOST_DEVICE Shared input_side() const {
    Shared other = *this;
    other.w = w_x;
    return other;
  }
};

// The rows of a weight w [G*H, H] of the block's units into shared memory
// (smem row k*U + u is w's row k*H + j0 + u); the rows of units past H (the
// last block of a direction) are zeros.
template <typename scalar_t>
C10_HOST_DEVICE inline void load_weight_rows(
    const ForwardParams<scalar_t>& p,
    const scalar_t* w,
    const Slice& s,
    scalar_t* shared_w,
    int64_t thread,
    int64_t threads) {
  const int64_t U = p.geo.units, H = p.H;
  const int64_t total = p.G * U * H;
  for (int64_t index = thread; index < total; index += threads) {
    const int64_t row = index / H, k = index % H;
    const int64_t gate = row / U, u = row % U;
    shared_w[row * p.geo.w_stride + k] =
        u < s.units ? w[(gate * H + s.j0 + u) * H + k] : scalar_t(0);
  }
}

// Phase 0 (once): the block's W_hh rows into shared memory.
template <typename scalar_t>
C10_HOST_DEVICE inline void load_weights(
    const ForwardParams<scalar_t>& p,
    const Slice& s,
    const Shared<scalar_t>& sh,
    int64_t thread,
    int64_t threads) {
  load_weight_rows(p, p.w_hh + s.d * p.G * p.H * p.H, s, sh.w, thread, threads);
}

// Where step `step` of a block reads and writes.
struct StepPlace {
  int64_t t = 0; // time index of this direction's step
  int64_t rows = 0; // rows running at t
  int64_t prev = 0, next = 0; // element offsets of h_{t-1} / h_t [B, H]
};

template <typename scalar_t>
C10_HOST_DEVICE inline StepPlace step_place(
    const ForwardParams<scalar_t>& p,
    const Slice& s,
    int64_t step) {
  StepPlace place;
  place.t = s.d == 0 ? step : p.T - 1 - step;
  place.rows = p.active != nullptr ? p.active[place.t] : p.B;
  place.prev = ((step & 1) * p.D + s.d) * p.B * p.H;
  place.next = (((step + 1) & 1) * p.D + s.d) * p.B * p.H;
  return place;
}

// Phase 1: h_{t-1} of the tile's running rows [b0, b0 + running) into
// shared memory.
template <typename scalar_t>
C10_HOST_DEVICE inline void load_hidden_tile(
    const ForwardParams<scalar_t>& p,
    const StepPlace& place,
    const Shared<scalar_t>& sh,
    int64_t b0,
    int64_t running,
    int64_t thread,
    int64_t threads) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = p.H;
  const scalar_t* h_prev = p.h_buffers + place.prev + b0 * H;
  for (int64_t index = thread; index < running * H; index += threads) {
    const int64_t b = index / H, k = index % H;
    sh.h[b * p.geo.h_stride + k] = acc_t(load_coherent(h_prev + index));
  }
}

// Phase 2: output o of the tile (W row o % rows, row group o / rows); the
// same for both passes.
C10_HOST_DEVICE inline int64_t dot_outputs(
    const Geometry& geo,
    int64_t running) {
  return geo.rows * ((running + kRowGroup - 1) / kRowGroup);
}

// Lane `lane` of the team of output o: its share of the kRowGroup dot
// products (k = lane, lane + team, ...).
template <typename scalar_t>
C10_HOST_DEVICE inline void dot_partial(
    const Geometry& geo,
    const Shared<scalar_t>& sh,
    int64_t o,
    int64_t lane,
    at::opmath_type<scalar_t> (&sum)[kRowGroup]) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* w = sh.w + (o % geo.rows) * geo.w_stride;
  const acc_t* h = sh.h + (o / geo.rows) * kRowGroup * geo.h_stride;
  const int64_t hs = geo.h_stride;
  for (int64_t k = lane; k < geo.k; k += geo.team) {
    const acc_t wk = acc_t(w[k]);
    DEEPRNN_UNROLL
    for (int i = 0; i < kRowGroup; ++i) {
      sum[i] += wk * h[i * hs + k];
    }
  }
}

// The team's total of output o, kept for the running rows of its group.
template <typename scalar_t>
C10_HOST_DEVICE inline void dot_store(
    const Geometry& geo,
    const Shared<scalar_t>& sh,
    int64_t o,
    int64_t running,
    const at::opmath_type<scalar_t> (&sum)[kRowGroup]) {
  const int64_t row = o % geo.rows, first = (o / geo.rows) * kRowGroup;
  DEEPRNN_UNROLL
  for (int i = 0; i < kRowGroup; ++i) {
    if (first + i < running) {
      sh.pre[(first + i) * geo.rows + row] = sum[i];
    }
  }
}

// Phase 3: the cell update of unit u of batch row b0 + bl.
template <typename scalar_t>
C10_HOST_DEVICE inline void cell_update(
    const ForwardParams<scalar_t>& p,
    const Slice& s,
    const StepPlace& place,
    const Shared<scalar_t>& sh,
    int64_t b0,
    int64_t bl,
    int64_t u,
    bool running) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = p.H, D = p.D, G = p.G, U = p.geo.units;
  const int64_t b = b0 + bl, j = s.j0 + u, t = place.t;
  const int64_t out = (t * p.B + b) * D * H + s.d * H + j; // [T, B, D*H]
  const int64_t state = b * H + j; // within h_prev / h_next
  scalar_t* h_next = p.h_buffers + place.next;
  const scalar_t* h_prev = p.h_buffers + place.prev;
  if (!running) {
    // Past the end (or, reverse, not yet started): zeros out, state kept.
    p.y[out] = scalar_t(0);
    if (p.c_saved != nullptr) {
      p.c_saved[out] = scalar_t(0);
    }
    h_next[state] = load_coherent(h_prev + state);
    return;
  }
  scalar_t* g = p.gates + (t * p.B + b) * D * G * H + s.d * G * H;
  const scalar_t* bias = p.bias + s.d * G * H;
  // h_{t-1} W_hh^T of gate k, rounded to scalar_t as the general path's
  // GEMM output is (a no-op for float and double): both paths then add the
  // same numbers, so that a half-type ReLU or gate near its switching point
  // falls on the same side in both.
  const acc_t* products = sh.pre + bl * G * U + u;
  auto pre = [&](int64_t k) { return acc_t(scalar_t(products[k * U])); };
  switch (p.cell) {
    case Cell::LSTM: {
      scalar_t* c = p.c_state + s.d * p.B * H + state;
      const auto r = cell::lstm_forward<acc_t>(
          acc_t(g[j]) + pre(0) + acc_t(bias[j]),
          acc_t(g[H + j]) + pre(1) + acc_t(bias[H + j]),
          acc_t(g[2 * H + j]) + pre(2) + acc_t(bias[2 * H + j]),
          acc_t(g[3 * H + j]) + pre(3) + acc_t(bias[3 * H + j]),
          acc_t(*c));
      g[j] = r.i;
      g[H + j] = r.f;
      g[2 * H + j] = r.g;
      g[3 * H + j] = r.o;
      *c = r.c;
      if (p.c_saved != nullptr) {
        p.c_saved[out] = r.c;
      }
      p.y[out] = r.h;
      h_next[state] = r.h;
      break;
    }
    case Cell::GRU: {
      const auto r = cell::gru_forward<acc_t>(
          acc_t(g[j]) + acc_t(bias[j]),
          acc_t(g[H + j]) + acc_t(bias[H + j]),
          acc_t(g[2 * H + j]) + acc_t(bias[2 * H + j]),
          pre(0),
          pre(1),
          pre(2),
          acc_t(p.bias_hn[s.d * H + j]),
          acc_t(load_coherent(h_prev + state)));
      g[j] = r.r;
      g[H + j] = r.z;
      g[2 * H + j] = r.n;
      if (p.c_saved != nullptr) {
        p.c_saved[out] = r.hn;
      }
      p.y[out] = r.h;
      h_next[state] = r.h;
      break;
    }
    case Cell::RNN_TANH:
    case Cell::RNN_RELU: {
      const acc_t h = cell::rnn_forward<acc_t>(
          acc_t(g[j]) + pre(0) + acc_t(bias[j]), p.cell == Cell::RNN_RELU);
      p.y[out] = h;
      h_next[state] = h;
      break;
    }
  }
}

// One step of one block: every tile of batch rows, phases 1-3. `exec`
// provides for_threads(f) (f(thread, threads) on each thread of the block),
// sync() (the block barrier) and dot(p, sh, running) (phase 2).
template <typename scalar_t, typename Exec>
C10_HOST_DEVICE inline void forward_step(
    const ForwardParams<scalar_t>& p,
    const Slice& s,
    const Shared<scalar_t>& sh,
    int64_t step,
    Exec& exec) {
  const StepPlace place = step_place(p, s, step);
  const int64_t tile = p.geo.tile_rows;
  for (int64_t b0 = 0; b0 < p.B; b0 += tile) {
    const int64_t rows = p.B - b0 < tile ? p.B - b0 : tile;
    const int64_t running = place.rows <= b0
        ? 0
        : (place.rows - b0 < rows ? place.rows - b0 : rows);
    if (running > 0) {
      exec.for_threads([&](int64_t thread, int64_t threads) {
        load_hidden_tile(p, place, sh, b0, running, thread, threads);
      });
      exec.sync();
      exec.dot(p.geo, sh, running);
      exec.sync();
    }
    exec.for_threads([&](int64_t thread, int64_t threads) {
      for (int64_t index = thread; index < rows * s.units; index += threads) {
        const int64_t bl = index / s.units, u = index % s.units;
        cell_update(p, s, place, sh, b0, bl, u, bl < running);
      }
    });
    // The next tile overwrites the shared h and pre-activations.
    exec.sync();
  }
}

// ---------------------------------------------------------------------------
// Wavefront: the forward of a unidirectional stack of L layers in ONE
// cooperative launch (the stack kernel). The grid holds the blocks of every
// layer at once (layer l: blocks [l*n, (l+1)*n), each the Slice of a
// one-direction layer) and runs L + T - 1 wavefront steps with one grid
// barrier each, instead of L launches of T steps: at wavefront step w the
// blocks of layer l run its time step t = w - l. Layer l's input at t is
// layer l-1's h_t, written one wavefront step earlier, so from the second
// layer on the input projection moves into the kernel too: each block keeps
// its rows of W_ih beside those of W_hh (Geometry::x_offset) and, before the
// step's recurrent product, writes x_t W_ih^T of its units into the layer's
// gates for every batch row, exactly where the general path's whole-sequence
// GEMM puts it (rounded to scalar_t as that GEMM's output is). Everything
// else is forward_step on the layer's own ForwardParams: the reserve is the
// general path's, and the general backward runs on it. Layer 0's input
// projection stays one GEMM before the launch.
//
// Dropout between layers: the driver draws every mask before the launch
// (the same draws in the same order as between layer launches: the same
// masks), and the input projection multiplies the layer below's h_t by its
// mask as it loads it.
//
// Fits (stack_applies, then choose_geometry with L groups and two weight
// slices): one direction, no projection, 2 <= L <= kMaxStackLayers, and all
// L layers' W_hh and W_ih slices co-resident.

constexpr int64_t kMaxStackLayers = 8;

template <typename scalar_t>
struct StackParams {
  int64_t L = 0;
  int64_t blocks_per_layer = 0;
  ForwardParams<scalar_t> layers[kMaxStackLayers]; // D = 1, the same geo
  const scalar_t* w_ih[kMaxStackLayers] = {}; // [G*H, H], layers >= 1
  // [T, B, H] the dropout mask on layer l's output as the next layer's
  // input (scaled by 1/(1-p)), or null without dropout
  const scalar_t* mask[kMaxStackLayers] = {};
};

// Phase 0 of the stack kernel for block `block`: its layer's W_hh rows and,
// above the first layer, its W_ih rows.
template <typename scalar_t>
C10_HOST_DEVICE inline void load_stack_weights(
    const StackParams<scalar_t>& p,
    int64_t block,
    const Shared<scalar_t>& sh,
    int64_t thread,
    int64_t threads) {
  const int64_t l = block / p.blocks_per_layer;
  const ForwardParams<scalar_t>& layer = p.layers[l];
  const Slice s = slice_of(layer, block % p.blocks_per_layer);
  load_weights(layer, s, sh, thread, threads);
  if (l > 0) {
    load_weight_rows(layer, p.w_ih[l], s, sh.w_x, thread, threads);
  }
}

// x_t W_ih^T of the block's units for every batch row, x_t = h_t of the
// layer below (`x` [T, B, H], that layer's output) times its dropout mask
// (null: none; the product rounded to scalar_t, as the general path's
// y * mask), into the layer's gates.
template <typename scalar_t, typename Exec>
C10_HOST_DEVICE inline void input_projection_step(
    const ForwardParams<scalar_t>& p,
    const scalar_t* x,
    const scalar_t* mask,
    const Slice& s,
    const Shared<scalar_t>& sh,
    int64_t t,
    Exec& exec) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t tile = p.geo.tile_rows, H = p.H, U = p.geo.units;
  const Shared<scalar_t> sh_x = sh.input_side();
  for (int64_t b0 = 0; b0 < p.B; b0 += tile) {
    const int64_t rows = p.B - b0 < tile ? p.B - b0 : tile;
    exec.for_threads([&](int64_t thread, int64_t threads) {
      const int64_t first = (t * p.B + b0) * H;
      for (int64_t index = thread; index < rows * H; index += threads) {
        const int64_t b = index / H, k = index % H;
        scalar_t value = load_coherent(x + first + index);
        if (mask != nullptr) {
          value = scalar_t(acc_t(value) * acc_t(mask[first + index]));
        }
        sh_x.h[b * p.geo.h_stride + k] = acc_t(value);
      }
    });
    exec.sync();
    exec.dot(p.geo, sh_x, rows);
    exec.sync();
    exec.for_threads([&](int64_t thread, int64_t threads) {
      for (int64_t index = thread; index < rows * p.G * s.units;
           index += threads) {
        const int64_t bl = index / (p.G * s.units);
        const int64_t rest = index % (p.G * s.units);
        const int64_t k = rest / s.units, u = rest % s.units;
        p.gates[(t * p.B + b0 + bl) * p.G * H + k * H + s.j0 + u] =
            scalar_t(sh_x.pre[bl * p.geo.rows + k * U + u]);
      }
    });
    // The next tile (or forward_step) overwrites the shared tiles; the
    // gates just written are read by this block's threads only.
    exec.sync();
  }
}

// Wavefront step `wave` of block `block`: its layer's time step wave - l,
// if that is one.
template <typename scalar_t, typename Exec>
C10_HOST_DEVICE inline void stack_step(
    const StackParams<scalar_t>& p,
    int64_t block,
    const Shared<scalar_t>& sh,
    int64_t wave,
    Exec& exec) {
  const int64_t l = block / p.blocks_per_layer;
  const ForwardParams<scalar_t>& layer = p.layers[l];
  const int64_t t = wave - l;
  if (t < 0 || t >= layer.T) {
    return;
  }
  const Slice s = slice_of(layer, block % p.blocks_per_layer);
  if (l > 0) {
    input_projection_step(
        layer, p.layers[l - 1].y, p.mask[l - 1], s, sh, t, exec);
  }
  forward_step(layer, s, sh, t, exec);
}

// ---------------------------------------------------------------------------
// Backward: the time loop of the general backward (cuda/rnn_cuda.cu,
// backward_layer) in one cooperative launch. Block (d, units [j0, j0+U))
// keeps the columns j0.. of W_hh (as rows of W_hh^T: [U, G*H]) on chip and
// per step
//   A. runs the pointwise backward of its own units for every batch row
//      (the general path's lstm/gru/rnn_backward_step, same formulas, same
//      writes: dG_x, GRU's dG_h, the cell gradient, the carry of dh), then
//   -- grid.sync(): all of dG_t is in global memory --
//   B. adds dG_t W_hh[:, own units] to the carry of its own units, for the
//      running rows (the rows past their end have dG = 0 and keep their
//      carry, as the general path's GEMM leaves them).
// B of step s and A of step s+1 touch only the block's own units (and dG of
// another time step), so one grid barrier per step is enough. The weight
// gradients and dx stay the general path's GEMMs after the loop.

template <typename scalar_t>
struct BackwardParams {
  Cell cell = Cell::LSTM;
  int64_t T = 0, B = 0, H = 0, D = 1, G = 1;
  Geometry geo;
  const scalar_t* w_hh = nullptr; // [D, G*H, H]
  const scalar_t* gates = nullptr; // [T, B, D*G*H] activations
  const scalar_t* cells = nullptr; // [T, B, D*H] LSTM c_t / GRU gh_n + b_hn
  const scalar_t* y = nullptr; // [T, B, D*H] h_t
  const scalar_t* h_initial = nullptr; // [D, B, H] h0 of the layer (GRU)
  const scalar_t* c_initial = nullptr; // [D, B, H] c0 of the layer (LSTM)
  const scalar_t* dy = nullptr; // [T, B, D*H]
  scalar_t* dh_carry = nullptr; // [D, B, H] in: dhy; out: dhx
  scalar_t* dc = nullptr; // [D, B, H] in: dcy; out: dcx (LSTM)
  scalar_t* dgates_x = nullptr; // [T, B, D*G*H]
  scalar_t* dgates_h = nullptr; // [T, B, D*G*H] GRU; dgates_x otherwise
  const int64_t* active = nullptr; // [T + 1] or null
};

// Columns j0.. of a weight w [G*H, H] as rows of shared memory, row u =
// w[:, j0 + u] (zeros past H).
template <typename scalar_t>
C10_HOST_DEVICE inline void load_columns(
    const BackwardParams<scalar_t>& p,
    const scalar_t* w,
    const Slice& s,
    scalar_t* shared_w,
    int64_t thread,
    int64_t threads) {
  const int64_t U = p.geo.units, H = p.H, K = p.G * p.H;
  for (int64_t index = thread; index < U * K; index += threads) {
    const int64_t k = index / U, u = index % U; // reads along a row of w
    shared_w[u * p.geo.w_stride + k] =
        u < s.units ? w[k * H + s.j0 + u] : scalar_t(0);
  }
}

// Phase 0 (once): columns j0.. of W_hh as rows of shared memory.
template <typename scalar_t>
C10_HOST_DEVICE inline void load_weights_transposed(
    const BackwardParams<scalar_t>& p,
    const Slice& s,
    const Shared<scalar_t>& sh,
    int64_t thread,
    int64_t threads) {
  load_columns(p, p.w_hh + s.d * p.G * p.H * p.H, s, sh.w, thread, threads);
}

// Where backward step `step` of direction d works (it visits the steps in
// the opposite order of forward).
struct BackwardPlace {
  int64_t t = 0; // time index
  int64_t t_prev = 0; // the step whose state t resumed from in forward
  int64_t rows = 0; // rows running at t
  int64_t resumed = 0; // rows [0, resumed) read t_prev's state, the others h0
};

template <typename scalar_t>
C10_HOST_DEVICE inline BackwardPlace backward_place(
    const BackwardParams<scalar_t>& p,
    const Slice& s,
    int64_t step) {
  BackwardPlace place;
  place.t = s.d == 0 ? p.T - 1 - step : step;
  const bool first_in_forward = s.d == 0 ? place.t == 0 : place.t == p.T - 1;
  place.t_prev = s.d == 0 ? place.t - 1 : place.t + 1;
  auto active = [&](int64_t t) {
    return p.active != nullptr ? p.active[t] : p.B;
  };
  place.rows = active(place.t);
  if (first_in_forward) {
    place.resumed = 0;
  } else {
    const int64_t previous = active(place.t_prev);
    place.resumed = place.rows < previous ? place.rows : previous;
  }
  return place;
}

// Phase A: the pointwise backward of unit u of batch row b.
template <typename scalar_t>
C10_HOST_DEVICE inline void cell_backward(
    const BackwardParams<scalar_t>& p,
    const Slice& s,
    const BackwardPlace& place,
    int64_t b,
    int64_t u) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = p.H, D = p.D, G = p.G, B = p.B;
  const int64_t j = s.j0 + u, t = place.t;
  const int64_t at_t = (t * B + b) * D * H + s.d * H + j; // [T, B, D*H]
  const int64_t gate = (t * B + b) * D * G * H + s.d * G * H + j;
  const int64_t state = (s.d * B + b) * H + j; // [D, B, H]
  scalar_t* dgx = p.dgates_x + gate;
  scalar_t* dgh = p.dgates_h + gate;
  if (b >= place.rows) {
    // Past the end: zero gradients, the carries stay.
    for (int64_t k = 0; k < G; ++k) {
      dgx[k * H] = scalar_t(0);
      dgh[k * H] = scalar_t(0);
    }
    return;
  }
  const bool resumed = b < place.resumed;
  const int64_t at_prev = (place.t_prev * B + b) * D * H + s.d * H + j;
  scalar_t* carry = p.dh_carry + state;
  const acc_t dh = acc_t(p.dy[at_t]) + acc_t(*carry);
  const scalar_t* g = p.gates + gate;
  switch (p.cell) {
    case Cell::LSTM: {
      const acc_t c_prev =
          resumed ? acc_t(p.cells[at_prev]) : acc_t(p.c_initial[state]);
      scalar_t* dc = p.dc + state;
      const auto r = cell::lstm_backward<acc_t>(
          g[0],
          g[H],
          g[2 * H],
          g[3 * H],
          p.cells[at_t],
          c_prev,
          dh,
          acc_t(*dc));
      dgx[0] = r.di;
      dgx[H] = r.df;
      dgx[2 * H] = r.dg;
      dgx[3 * H] = r.do_;
      *dc = r.dc_prev;
      *carry = scalar_t(0); // phase B adds dG W_hh
      break;
    }
    case Cell::GRU: {
      const acc_t h_prev =
          resumed ? acc_t(p.y[at_prev]) : acc_t(p.h_initial[state]);
      const auto r = cell::gru_backward<acc_t>(
          g[0], g[H], g[2 * H], p.cells[at_t], h_prev, dh);
      dgx[0] = r.dr;
      dgx[H] = r.dz;
      dgx[2 * H] = r.dn_x;
      dgh[0] = r.dr;
      dgh[H] = r.dz;
      dgh[2 * H] = r.dn_h;
      *carry = r.dh_prev; // z * dh; phase B adds dG_h W_hh
      break;
    }
    case Cell::RNN_TANH:
    case Cell::RNN_RELU: {
      dgx[0] = cell::rnn_backward<acc_t>(
          acc_t(p.y[at_t]), dh, p.cell == Cell::RNN_RELU);
      *carry = scalar_t(0);
      break;
    }
  }
}

// Phase B for the running rows [b0, b0 + running): dG_t of those rows (all
// gates, this direction) into shared memory.
// (`dgates` [T, B, D*G*H]: dG_h here; the stack kernel's dy product reads
// the layer above's dG_x.)
template <typename scalar_t>
C10_HOST_DEVICE inline void load_dgates_tile(
    const BackwardParams<scalar_t>& p,
    const scalar_t* dgates,
    const Slice& s,
    const BackwardPlace& place,
    const Shared<scalar_t>& sh,
    int64_t b0,
    int64_t running,
    int64_t thread,
    int64_t threads) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = p.G * p.H;
  for (int64_t index = thread; index < running * K; index += threads) {
    const int64_t bl = index / K, k = index % K;
    const int64_t at = ((place.t * p.B + b0 + bl) * p.D + s.d) * K + k;
    sh.h[bl * p.geo.h_stride + k] = acc_t(load_coherent(dgates + at));
  }
}

// Phase A of one backward step of one block (all batch rows, own units).
// `exec` as for forward_step.
template <typename scalar_t, typename Exec>
C10_HOST_DEVICE inline void backward_step_pointwise(
    const BackwardParams<scalar_t>& p,
    const Slice& s,
    int64_t step,
    Exec& exec) {
  const BackwardPlace place = backward_place(p, s, step);
  exec.for_threads([&](int64_t thread, int64_t threads) {
    for (int64_t index = thread; index < p.B * s.units; index += threads) {
      cell_backward(p, s, place, index / s.units, index % s.units);
    }
  });
}

// Phase B of one backward step of one block, after the grid barrier: the
// carry of own units += dG_t W_hh[:, own units] for the running rows.
template <typename scalar_t, typename Exec>
C10_HOST_DEVICE inline void backward_step_product(
    const BackwardParams<scalar_t>& p,
    const Slice& s,
    const Shared<scalar_t>& sh,
    int64_t step,
    Exec& exec) {
  using acc_t = at::opmath_type<scalar_t>;
  const BackwardPlace place = backward_place(p, s, step);
  const int64_t tile = p.geo.tile_rows;
  for (int64_t b0 = 0; b0 < place.rows; b0 += tile) {
    const int64_t running = place.rows - b0 < tile ? place.rows - b0 : tile;
    exec.for_threads([&](int64_t thread, int64_t threads) {
      load_dgates_tile(
          p, p.dgates_h, s, place, sh, b0, running, thread, threads);
    });
    exec.sync();
    exec.dot(p.geo, sh, running);
    exec.sync();
    exec.for_threads([&](int64_t thread, int64_t threads) {
      for (int64_t index = thread; index < running * s.units;
           index += threads) {
        const int64_t bl = index / s.units, u = index % s.units;
        scalar_t* carry = p.dh_carry + (s.d * p.B + b0 + bl) * p.H + s.j0 + u;
        *carry = acc_t(*carry) + sh.pre[bl * p.geo.rows + u];
      }
    });
    // The next tile overwrites the shared tiles; the next step's phase A
    // reads the carries.
    exec.sync();
  }
}

// ---------------------------------------------------------------------------
// Wavefront in backward: the time loops of a unidirectional stack's backward
// in one cooperative launch (the stack backward kernel), the top layer
// first. At wavefront step w the blocks of layer l run its backward step
// w - (L-1-l): the layer above is one step ahead. Layer l's dy at t is
// layer l+1's dx at t = dG_x(l+1, t) W_ih(l+1), which that layer's phase A
// wrote one wavefront step earlier; each block keeps the columns of
// W_ih(l+1) for its own units beside those of W_hh (Geometry::x_offset) and
// computes that product for its units before its phase A, into a dy buffer
// of the layer (rounded to scalar_t, as the general path's dx GEMM is). One
// grid barrier per wavefront step, between phases A and B as in the layer
// kernel. The top layer's dy is the caller's. After the launch the weight
// gradients of every layer, and dx of the first, are the general path's
// GEMMs.

template <typename scalar_t>
struct StackBackwardParams {
  int64_t L = 0;
  int64_t blocks_per_layer = 0;
  BackwardParams<scalar_t> layers[kMaxStackLayers]; // D = 1, the same geo
  const scalar_t* w_ih[kMaxStackLayers] = {}; // [G*H, H], layers >= 1
  // [T, B, H] the dy the kernel computes for layers[l] (l < L-1; their
  // layers[l].dy points there too)
  scalar_t* dy[kMaxStackLayers] = {};
  // [T, B, H] layer l's dropout mask (as in StackParams), or null
  const scalar_t* mask[kMaxStackLayers] = {};
};

// Phase 0 of the stack backward kernel for block `block`: the columns of
// its layer's W_hh and, below the top layer, of the next layer's W_ih.
template <typename scalar_t>
C10_HOST_DEVICE inline void load_stack_backward_weights(
    const StackBackwardParams<scalar_t>& p,
    int64_t block,
    const Shared<scalar_t>& sh,
    int64_t thread,
    int64_t threads) {
  const int64_t l = block / p.blocks_per_layer;
  const BackwardParams<scalar_t>& layer = p.layers[l];
  const Slice s = slice_of(layer, block % p.blocks_per_layer);
  load_weights_transposed(layer, s, sh, thread, threads);
  if (l + 1 < p.L) {
    load_columns(layer, p.w_ih[l + 1], s, sh.w_x, thread, threads);
  }
}

// The layer's backward step at wavefront step `wave`, or -1 when it has
// none there.
template <typename scalar_t>
C10_HOST_DEVICE inline int64_t stack_backward_step_of(
    const StackBackwardParams<scalar_t>& p,
    int64_t l,
    int64_t wave) {
  const int64_t step = wave - (p.L - 1 - l);
  return step >= 0 && step < p.layers[l].T ? step : -1;
}

// Before the grid barrier: below the top layer, dy of the block's units at
// its step's time for the running rows (dG_x of the layer above times the
// columns of its W_ih), then phase A.
template <typename scalar_t, typename Exec>
C10_HOST_DEVICE inline void stack_backward_pointwise(
    const StackBackwardParams<scalar_t>& p,
    int64_t block,
    const Shared<scalar_t>& sh,
    int64_t wave,
    Exec& exec) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t l = block / p.blocks_per_layer;
  const int64_t step = stack_backward_step_of(p, l, wave);
  if (step < 0) {
    return;
  }
  const BackwardParams<scalar_t>& layer = p.layers[l];
  const Slice s = slice_of(layer, block % p.blocks_per_layer);
  if (l + 1 < p.L) {
    const BackwardParams<scalar_t>& above = p.layers[l + 1];
    const BackwardPlace place = backward_place(layer, s, step);
    const Shared<scalar_t> sh_x = sh.input_side();
    const int64_t tile = layer.geo.tile_rows, H = layer.H;
    // dy is written by the block's own threads and read by them in phase
    // A; the layer above's dG_x is complete since the last grid barrier.
    scalar_t* dy = p.dy[l];
    const scalar_t* mask = p.mask[l];
    for (int64_t b0 = 0; b0 < place.rows; b0 += tile) {
      const int64_t running = place.rows - b0 < tile ? place.rows - b0 : tile;
      exec.for_threads([&](int64_t thread, int64_t threads) {
        load_dgates_tile(
            above,
            above.dgates_x,
            s,
            place,
            sh_x,
            b0,
            running,
            thread,
            threads);
      });
      exec.sync();
      exec.dot(layer.geo, sh_x, running);
      exec.sync();
      exec.for_threads([&](int64_t thread, int64_t threads) {
        for (int64_t index = thread; index < running * s.units;
             index += threads) {
          const int64_t bl = index / s.units, u = index % s.units;
          const int64_t at = (place.t * layer.B + b0 + bl) * H + s.j0 + u;
          // dx of the layer above, rounded as the general path's GEMM
          // output, times the mask (the general path's dx * mask)
          scalar_t value = scalar_t(sh_x.pre[bl * layer.geo.rows + u]);
          if (mask != nullptr) {
            value = scalar_t(acc_t(value) * acc_t(mask[at]));
          }
          dy[at] = value;
        }
      });
      exec.sync();
    }
  }
  backward_step_pointwise(layer, s, step, exec);
}

// After the grid barrier: phase B of the block's layer.
template <typename scalar_t, typename Exec>
C10_HOST_DEVICE inline void stack_backward_product(
    const StackBackwardParams<scalar_t>& p,
    int64_t block,
    const Shared<scalar_t>& sh,
    int64_t wave,
    Exec& exec) {
  const int64_t l = block / p.blocks_per_layer;
  const int64_t step = stack_backward_step_of(p, l, wave);
  if (step < 0) {
    return;
  }
  const BackwardParams<scalar_t>& layer = p.layers[l];
  backward_step_product(
      layer, slice_of(layer, block % p.blocks_per_layer), sh, step, exec);
}

// ---------------------------------------------------------------------------
// Host side: the layer around the kernel, for any `launch(params)` (the
// cooperative launch in cuda/persistent.cu, or a host emulation), which
// returns false when the kernel could not be launched; the host function
// then returns false too, having left the outputs unwritten, and the caller
// takes the general path.

inline Cell cell_of(Mode mode) {
  switch (mode) {
    case Mode::LSTM:
      return Cell::LSTM;
    case Mode::GRU:
      return Cell::GRU;
    case Mode::RNN_TANH:
      return Cell::RNN_TANH;
    case Mode::RNN_RELU:
      break;
  }
  return Cell::RNN_RELU;
}

// [D, G*H, H]: W_hh of both directions, contiguous.
inline at::Tensor stacked_w_hh(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer) {
  if (cfg.num_directions == 1) {
    return cells[layer].w_hh.unsqueeze(0).contiguous();
  }
  return at::stack({cells[2 * layer].w_hh, cells[2 * layer + 1].w_hh});
}

// [T + 1] rows running at each step on the device of `opts`, or undefined.
inline at::Tensor active_rows(
    const LengthsPlan* plan,
    const at::TensorOptions& opts) {
  if (plan == nullptr) {
    return at::Tensor();
  }
  at::Tensor active =
      at::tensor(plan->active, at::TensorOptions().dtype(at::kLong));
  if (opts.device().is_cuda()) {
    // From pinned memory the copy is queued on the stream without waiting
    // for it (the general path reads the plan on the host only).
    active = active.pin_memory().to(opts.device(), /*non_blocking=*/true);
  }
  return active;
}

template <typename scalar_t, typename Launch>
bool forward_layer(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::Tensor& layer_input, // [T, B, I_l]
    const at::Tensor& h0, // [L*D, B, H]
    const at::Tensor& c0, // [L*D, B, H] (LSTM)
    const LayerReserve& saved, // pieces of the reserve, or undefined
    const at::Tensor& y, // [T, B, D*H] out
    const at::Tensor& hy, // [L*D, B, H] out
    const at::Tensor& cy, // [L*D, B, H] out (LSTM)
    const LengthsPlan* plan, // null without lengths
    const Geometry& geo,
    const Launch& launch) {
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t H = cfg.hidden_size, G = cfg.gates;
  const auto opts = layer_input.options();
  const bool lstm = cfg.mode == Mode::LSTM;
  TORCH_INTERNAL_ASSERT(!cfg.has_proj && y.is_contiguous());

  // The input projection of every step and both directions in one GEMM, as
  // on the general path (and into the same place: the reserve's gates).
  at::Tensor gates =
      saved.gates.defined() ? saved.gates : at::empty({T, B, D * G * H}, opts);
  {
    at::Tensor gates_2d = gates.view({T * B, D * G * H});
    at::mm_out(
        gates_2d,
        layer_input.reshape({T * B, layer_input.size(2)}),
        stacked_input_weights(cfg, cells, layer).t());
  }
  const at::Tensor bias_x = input_bias(cfg, cells, layer, opts).contiguous();
  const at::Tensor bias_hn = cfg.mode == Mode::GRU
      ? recurrent_bias(cfg, cells, layer, opts).contiguous()
      : at::Tensor();
  const at::Tensor w_hh = stacked_w_hh(cfg, cells, layer);
  at::Tensor h_buffers = at::empty({2, D, B, H}, opts);
  h_buffers.select(0, 0).copy_(h0.narrow(0, layer * D, D));
  at::Tensor c_state = lstm
      ? c0.narrow(0, layer * D, D).clone(at::MemoryFormat::Contiguous)
      : at::Tensor();
  const at::Tensor active = active_rows(plan, opts);
  at::Tensor c_saved = saved.cells;
  TORCH_INTERNAL_ASSERT(!c_saved.defined() || c_saved.is_contiguous());

  ForwardParams<scalar_t> p;
  p.cell = cell_of(cfg.mode);
  p.T = T;
  p.B = B;
  p.H = H;
  p.D = D;
  p.G = G;
  p.geo = geo;
  p.w_hh = w_hh.data_ptr<scalar_t>();
  p.gates = gates.data_ptr<scalar_t>();
  p.bias = bias_x.data_ptr<scalar_t>();
  p.bias_hn = bias_hn.defined() ? bias_hn.data_ptr<scalar_t>() : nullptr;
  p.h_buffers = h_buffers.data_ptr<scalar_t>();
  p.c_state = lstm ? c_state.data_ptr<scalar_t>() : nullptr;
  p.c_saved = c_saved.defined() ? c_saved.data_ptr<scalar_t>() : nullptr;
  p.y = y.data_ptr<scalar_t>();
  p.active = active.defined() ? active.data_ptr<int64_t>() : nullptr;
  if (!launch(p)) {
    return false;
  }
  hy.narrow(0, layer * D, D).copy_(h_buffers.select(0, T & 1));
  if (lstm) {
    cy.narrow(0, layer * D, D).copy_(c_state);
  }
  return true;
}

// The time loop of backward_layer (cuda/rnn_cuda.cu) for any
// `launch(params)`: fills dgates_x (and GRU's dgates_h) for every step and
// leaves dhx (dcx) in dh_carry (dc_carry), as the general loop does.
template <typename scalar_t, typename Launch>
bool backward_loop(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::Tensor& y, // [T, B, D*H] the layer's output
    const at::Tensor& h0, // [L*D, B, H]
    const at::Tensor& c0, // [L*D, B, H] (LSTM)
    const LayerReserve& saved,
    const at::Tensor& dy, // [T, B, D*H]
    const at::Tensor& dgates_x, // [T, B, D*G*H] out
    const at::Tensor& dgates_h, // [T, B, D*G*H] out (GRU; else dgates_x)
    const at::Tensor& dh_carry, // [D, B, H] in: dhy; out: dhx
    const at::Tensor& dc_carry, // [D, B, H] in: dcy; out: dcx (LSTM)
    const LengthsPlan* plan, // null without lengths
    const Geometry& geo,
    const Launch& launch) {
  const int64_t D = cfg.num_directions;
  const auto opts = y.options();
  const bool lstm = cfg.mode == Mode::LSTM;
  const at::Tensor w_hh = stacked_w_hh(cfg, cells, layer);
  const at::Tensor h_initial = h0.narrow(0, layer * D, D).contiguous();
  const at::Tensor c_initial =
      lstm ? c0.narrow(0, layer * D, D).contiguous() : at::Tensor();
  const at::Tensor active = active_rows(plan, opts);

  BackwardParams<scalar_t> p;
  p.cell = cell_of(cfg.mode);
  p.T = cfg.seq_len;
  p.B = cfg.batch;
  p.H = cfg.hidden_size;
  p.D = D;
  p.G = cfg.gates;
  p.geo = geo;
  p.w_hh = w_hh.data_ptr<scalar_t>();
  p.gates = saved.gates.defined() ? saved.gates.data_ptr<scalar_t>() : nullptr;
  p.cells = saved.cells.defined() ? saved.cells.data_ptr<scalar_t>() : nullptr;
  p.y = y.data_ptr<scalar_t>();
  p.h_initial = h_initial.data_ptr<scalar_t>();
  p.c_initial = lstm ? c_initial.data_ptr<scalar_t>() : nullptr;
  p.dy = dy.data_ptr<scalar_t>();
  p.dh_carry = dh_carry.data_ptr<scalar_t>();
  p.dc = lstm ? dc_carry.data_ptr<scalar_t>() : nullptr;
  p.dgates_x = dgates_x.data_ptr<scalar_t>();
  p.dgates_h = dgates_h.data_ptr<scalar_t>();
  p.active = active.defined() ? active.data_ptr<int64_t>() : nullptr;
  return launch(p);
}

// Whether a stack may take the stack kernels, before their geometry is
// asked (see the Wavefront notes above).
inline bool stack_applies(const RNNConfig& cfg) {
  return cfg.num_directions == 1 && !cfg.has_proj && cfg.num_layers >= 2 &&
      cfg.num_layers <= kMaxStackLayers && cfg.batch > 0 && cfg.seq_len > 0;
}

// Every layer's forward in one `launch(params)` of the stack kernel, with
// the same results and the same reserve as forward_layer layer by layer.
template <typename scalar_t, typename Launch>
bool forward_stack(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    const at::Tensor& input, // [T, B, I] the first layer's input
    const at::Tensor& h0, // [L, B, H]
    const at::Tensor& c0, // [L, B, H] (LSTM)
    const std::vector<LayerReserve>& saved, // per layer, pieces or undefined
    const std::vector<at::Tensor>& masks, // per layer, dropout or undefined
    const at::Tensor& output, // [T, B, H] out: the last layer's output
    const at::Tensor& hy, // [L, B, H] out
    const at::Tensor& cy, // [L, B, H] out (LSTM)
    const LengthsPlan* plan, // null without lengths
    const Geometry& geo,
    const Launch& launch) {
  const int64_t T = cfg.seq_len, B = cfg.batch, L = cfg.num_layers;
  const int64_t H = cfg.hidden_size, G = cfg.gates;
  const auto opts = input.options();
  const bool lstm = cfg.mode == Mode::LSTM;
  TORCH_INTERNAL_ASSERT(stack_applies(cfg) && geo.x_offset != 0);
  TORCH_INTERNAL_ASSERT(output.is_contiguous());

  StackParams<scalar_t> p;
  p.L = L;
  p.blocks_per_layer = geo.blocks_per_direction;
  // Held until the launch is queued (the caching allocator orders their
  // reuse after it on the stream).
  std::vector<at::Tensor> keep;
  at::Tensor h_buffers = at::empty({L, 2, B, H}, opts);
  h_buffers.select(1, 0).copy_(h0);
  at::Tensor c_state =
      lstm ? c0.clone(at::MemoryFormat::Contiguous) : at::Tensor();
  const at::Tensor active = active_rows(plan, opts);
  for (const auto l : c10::irange(L)) {
    const LayerReserve& r = saved[l];
    at::Tensor y = l == L - 1 ? output
        : r.output.defined()  ? r.output
                              : at::empty({T, B, H}, opts);
    at::Tensor gates =
        r.gates.defined() ? r.gates : at::empty({T, B, G * H}, opts);
    TORCH_INTERNAL_ASSERT(y.is_contiguous() && gates.is_contiguous());
    TORCH_INTERNAL_ASSERT(!r.cells.defined() || r.cells.is_contiguous());
    if (l == 0) {
      at::Tensor gates_2d = gates.view({T * B, G * H});
      at::mm_out(
          gates_2d,
          input.reshape({T * B, input.size(2)}),
          stacked_input_weights(cfg, cells, 0).t());
    } else {
      const at::Tensor w_ih = cells[l].w_ih.contiguous();
      p.w_ih[l] = w_ih.data_ptr<scalar_t>();
      keep.push_back(w_ih);
    }
    if (l < L - 1 && masks[l].defined()) {
      TORCH_INTERNAL_ASSERT(masks[l].is_contiguous());
      p.mask[l] = masks[l].data_ptr<scalar_t>();
    }
    const at::Tensor bias_x = input_bias(cfg, cells, l, opts).contiguous();
    const at::Tensor bias_hn = cfg.mode == Mode::GRU
        ? recurrent_bias(cfg, cells, l, opts).contiguous()
        : at::Tensor();
    const at::Tensor w_hh = stacked_w_hh(cfg, cells, l);
    ForwardParams<scalar_t>& layer = p.layers[l];
    layer.cell = cell_of(cfg.mode);
    layer.T = T;
    layer.B = B;
    layer.H = H;
    layer.D = 1;
    layer.G = G;
    layer.geo = geo;
    layer.w_hh = w_hh.data_ptr<scalar_t>();
    layer.gates = gates.data_ptr<scalar_t>();
    layer.bias = bias_x.data_ptr<scalar_t>();
    layer.bias_hn = bias_hn.defined() ? bias_hn.data_ptr<scalar_t>() : nullptr;
    layer.h_buffers = h_buffers[l].data_ptr<scalar_t>();
    layer.c_state = lstm ? c_state[l].data_ptr<scalar_t>() : nullptr;
    layer.c_saved = r.cells.defined() ? r.cells.data_ptr<scalar_t>() : nullptr;
    layer.y = y.data_ptr<scalar_t>();
    layer.active = active.defined() ? active.data_ptr<int64_t>() : nullptr;
    keep.insert(keep.end(), {y, gates, bias_x, bias_hn, w_hh});
  }
  if (!launch(p)) {
    return false;
  }
  hy.copy_(h_buffers.select(1, T & 1));
  if (lstm) {
    cy.copy_(c_state);
  }
  return true;
}

// The time loops of a stack's backward in one `launch(params)` of the stack
// backward kernel, then every layer's weight gradients and the first
// layer's dx as backward_layer (cuda/rnn_cuda.cu) computes them after its
// loop: the same results as the layers one by one.
template <typename scalar_t, typename Launch>
bool backward_stack(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    const at::Tensor& input, // [T, B, I] the first layer's input
    const at::Tensor& output, // [T, B, H] the last layer's output
    const at::Tensor& h0, // [L, B, H]
    const at::Tensor& c0, // [L, B, H] (LSTM)
    const std::vector<LayerReserve>& saved,
    const at::Tensor& dy, // [T, B, H] gradient of the output
    const at::Tensor& dhy, // [L, B, H]
    const at::Tensor& dcy, // [L, B, H] (LSTM)
    bool need_input_grad,
    bool need_param_grads,
    at::Tensor& dx, // out: [T, B, I] if need_input_grad
    const at::Tensor& dhx, // out: [L, B, H] or undefined
    const at::Tensor& dcx, // out: [L, B, H] or undefined
    std::vector<at::Tensor>& dparams, // out, flat like params
    const LengthsPlan* plan, // null without lengths
    const Geometry& geo,
    const Launch& launch) {
  const int64_t T = cfg.seq_len, B = cfg.batch, L = cfg.num_layers;
  const int64_t H = cfg.hidden_size, G = cfg.gates;
  const auto opts = output.options();
  const bool lstm = cfg.mode == Mode::LSTM;
  const bool gru = cfg.mode == Mode::GRU;
  TORCH_INTERNAL_ASSERT(stack_applies(cfg) && geo.x_offset != 0);

  StackBackwardParams<scalar_t> p;
  p.L = L;
  p.blocks_per_layer = geo.blocks_per_direction;
  const at::Tensor active = active_rows(plan, opts);
  const at::Tensor top_dy = dy.contiguous();
  at::Tensor dh_carry = dhy.clone(at::MemoryFormat::Contiguous); // [L, B, H]
  at::Tensor dc_carry =
      lstm ? dcy.clone(at::MemoryFormat::Contiguous) : at::Tensor();
  const at::Tensor h_initial = h0.contiguous();
  const at::Tensor c_initial = lstm ? c0.contiguous() : at::Tensor();
  std::vector<at::Tensor> ys(L), dgates_x(L), dgates_h(L), keep;
  for (const auto l : c10::irange(L)) {
    const LayerReserve& r = saved[l];
    ys[l] = l == L - 1 ? output.contiguous() : saved[l].output;
    TORCH_INTERNAL_ASSERT(ys[l].defined() && ys[l].is_contiguous());
    // (RNN keeps no gates in the reserve.)
    TORCH_INTERNAL_ASSERT(!r.gates.defined() || r.gates.is_contiguous());
    TORCH_INTERNAL_ASSERT(!r.cells.defined() || r.cells.is_contiguous());
    dgates_x[l] = at::empty({T, B, G * H}, opts);
    dgates_h[l] = gru ? at::empty({T, B, G * H}, opts) : dgates_x[l];
    at::Tensor layer_dy = top_dy;
    if (l < L - 1) {
      layer_dy = at::empty({T, B, H}, opts);
      p.dy[l] = layer_dy.data_ptr<scalar_t>();
    }
    if (l > 0) {
      const at::Tensor w_ih = cells[l].w_ih.contiguous();
      p.w_ih[l] = w_ih.data_ptr<scalar_t>();
      keep.push_back(w_ih);
    }
    if (l < L - 1 && cfg.uses_dropout()) {
      TORCH_INTERNAL_ASSERT(r.mask.defined() && r.mask.is_contiguous());
      p.mask[l] = r.mask.data_ptr<scalar_t>();
    }
    const at::Tensor w_hh = stacked_w_hh(cfg, cells, l);
    BackwardParams<scalar_t>& layer = p.layers[l];
    layer.cell = cell_of(cfg.mode);
    layer.T = T;
    layer.B = B;
    layer.H = H;
    layer.D = 1;
    layer.G = G;
    layer.geo = geo;
    layer.w_hh = w_hh.data_ptr<scalar_t>();
    layer.gates = r.gates.defined() ? r.gates.data_ptr<scalar_t>() : nullptr;
    layer.cells = r.cells.defined() ? r.cells.data_ptr<scalar_t>() : nullptr;
    layer.y = ys[l].data_ptr<scalar_t>();
    layer.h_initial = h_initial[l].data_ptr<scalar_t>();
    layer.c_initial = lstm ? c_initial[l].data_ptr<scalar_t>() : nullptr;
    layer.dy = layer_dy.data_ptr<scalar_t>();
    layer.dh_carry = dh_carry[l].data_ptr<scalar_t>();
    layer.dc = lstm ? dc_carry[l].data_ptr<scalar_t>() : nullptr;
    layer.dgates_x = dgates_x[l].data_ptr<scalar_t>();
    layer.dgates_h = dgates_h[l].data_ptr<scalar_t>();
    layer.active = active.defined() ? active.data_ptr<int64_t>() : nullptr;
    keep.insert(keep.end(), {layer_dy, w_hh});
  }
  if (!launch(p)) {
    return false;
  }
  if (dhx.defined()) {
    dhx.copy_(dh_carry);
  }
  if (dcx.defined()) {
    dcx.copy_(dc_carry);
  }
  for (int64_t l = L - 1; l >= 0; --l) {
    at::Tensor layer_dx;
    const at::Tensor layer_input = l == 0 ? input
        : cfg.uses_dropout() ? saved[l - 1].output * saved[l - 1].mask
                             : saved[l - 1].output;
    layer_weight_and_input_gradients(
        cfg,
        cells,
        l,
        layer_input,
        ys[l],
        h0,
        saved[l],
        dgates_x[l],
        dgates_h[l],
        at::Tensor(),
        l == 0 && need_input_grad,
        need_param_grads,
        layer_dx,
        dparams,
        plan);
    if (l == 0) {
      dx = layer_dx;
    }
  }
  return true;
}

} // namespace persistent

// ---------------------------------------------------------------------------
// Entry points (cuda/persistent.cu)

// The process-wide switch of the CUDA fast paths: the private operator
// deeprnn::_cuda_fast_path (ops/schemas.cpp), whose initial value comes from
// the environment variable DEEPRNN_CUDA_FAST_PATH (unset or 0: off, 1: on
// where it fits). Off by default until the fast path is verified on a GPU.
bool fast_path_enabled();

// Runs layer `layer`'s forward with the persistent kernel and returns true
// when the switch is on and the layer fits it; returns false, having done
// nothing, otherwise (the caller then takes the general path).
template <typename scalar_t>
bool try_persistent_forward_layer(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::Tensor& layer_input,
    const at::Tensor& h0,
    const at::Tensor& c0,
    const LayerReserve& saved,
    const at::Tensor& y,
    const at::Tensor& hy,
    const at::Tensor& cy,
    const LengthsPlan* plan);

// Every layer's forward with the stack kernel (the wavefront, see
// persistent::forward_stack) and returns true when the switch is on, the
// stack applies and fits; returns false, having done nothing, otherwise (the
// caller then runs the layers one by one). All tensors as in
// persistent::forward_stack.
template <typename scalar_t>
bool try_persistent_forward_stack(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    const at::Tensor& input,
    const at::Tensor& h0,
    const at::Tensor& c0,
    const std::vector<LayerReserve>& saved,
    const std::vector<at::Tensor>& masks,
    const at::Tensor& output,
    const at::Tensor& hy,
    const at::Tensor& cy,
    const LengthsPlan* plan);

// A stack's backward with the stack backward kernel (the wavefront, see
// persistent::backward_stack): returns true, having written everything
// backward_layer writes for every layer (dx of the first), when the switch
// is on, the stack applies and fits; false, having done nothing, otherwise
// (the caller then runs the layers one by one).
template <typename scalar_t>
bool try_persistent_backward_stack(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    const at::Tensor& input,
    const at::Tensor& output,
    const at::Tensor& h0,
    const at::Tensor& c0,
    const std::vector<LayerReserve>& saved,
    const at::Tensor& dy,
    const at::Tensor& dhy,
    const at::Tensor& dcy,
    bool need_input_grad,
    bool need_param_grads,
    at::Tensor& dx,
    const at::Tensor& dhx,
    const at::Tensor& dcx,
    std::vector<at::Tensor>& dparams,
    const LengthsPlan* plan);

// The time loop of layer `layer`'s backward with the persistent backward
// kernel: returns true, having filled dgates_x (dgates_h) and the carries,
// when the switch is on and the layer fits; false, having done nothing,
// otherwise (the caller then runs the general loop). All tensors as in
// persistent::backward_loop.
template <typename scalar_t>
bool try_persistent_backward_loop(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const at::Tensor& y,
    const at::Tensor& h0,
    const at::Tensor& c0,
    const LayerReserve& saved,
    const at::Tensor& dy,
    const at::Tensor& dgates_x,
    const at::Tensor& dgates_h,
    const at::Tensor& dh_carry,
    const at::Tensor& dc_carry,
    const LengthsPlan* plan);

} // namespace cuda
} // namespace deeprnn
