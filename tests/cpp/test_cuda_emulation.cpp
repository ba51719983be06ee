// The CUDA fast paths' per-block code (csrc/cuda/persistent.cuh) run on the
// CPU, against deeprnn's CPU kernels: a check of their index arithmetic,
// phases and results that needs no GPU.
//
// persistent.cuh writes what one block does in one step as __host__
// __device__ functions over an `Exec` (a phase on every thread of the block,
// the barrier between phases, the team dot products). On the GPU the Exec
// is the block itself; here (`HostBlock`) each phase runs its threads one
// after another in a shuffled order, the blocks of a grid step run one
// after another in a shuffled order, and the grid barrier is the end of
// that loop. A phase whose threads depended on each other, or a grid step
// whose blocks did, would give different results in another order: the
// shuffles make such a race show up as a mismatch. Each block's shared
// memory starts as NaN bytes and lives for the whole launch, as on the GPU,
// so a read of a shared value nobody wrote shows up as a NaN.
//
// `EmulatedBackend` plugs the emulated launches into the same operator
// drivers (common/driver.h) and host functions (persistent::forward_layer,
// backward_loop) as the CUDA backend, with a random geometry per case
// (units per block, batch tile, threads per block: the chooser picks these
// from the device on a GPU), and every case is compared with deeprnn's CPU
// operators: outputs, final states, the reserve and every gradient.
//
// What this cannot see: the device's memory model (the coherent loads and
// the grid barrier's ordering), shuffle-level warp behaviour, occupancy,
// and speed. scripts/gpu_check.sh runs the real kernels.
//
// Also here: the bookkeeping of the CUDA graphs of the general path's time
// loops (cuda/loop_graphs.h), with a stand-in for the graph.

#include "common/driver.h"
#include "cuda/loop_graphs.h"
#include "cuda/persistent.cuh"

#include "test_helpers.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/irange.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

// This test compiles common/config.cpp and common/layers.cpp itself (the
// library keeps their symbols hidden). layers.cpp reaches for the oneDNN
// GEMM of cpu/packed_gemm.cpp, which registers operators the loaded library
// registers already: the test's own copy always declines, and the GEMMs run
// through ATen.
namespace deeprnn {
namespace cpu {
bool onednn_matmul_out(
    at::Tensor& /*out*/,
    const at::Tensor& /*a*/,
    const at::Tensor& /*b*/,
    bool /*accumulate*/) {
  return false;
}
} // namespace cpu
} // namespace deeprnn

namespace {

using at::Tensor;
using deeprnn::CellParams;
using deeprnn::LayerReserve;
using deeprnn::LengthsPlan;
using deeprnn::RNNConfig;
namespace persistent = deeprnn::cuda::persistent;
using persistent::Geometry;

// ---------------------------------------------------------------------------
// The emulated device

// The geometry of the next launches, per pass; set by each case.
struct EmulatedDevice {
  int64_t units = 1; // hidden units per block
  int64_t tile_rows = persistent::kRowGroup;
  int64_t threads = persistent::kThreads;
  bool stack = false; // whether stacks that fit take the stack kernel
  std::mt19937_64 rng{0};
  int64_t forward_launches = 0, backward_launches = 0;
  int64_t stack_launches = 0, stack_backward_launches = 0;
};

EmulatedDevice& device() {
  static EmulatedDevice state;
  return state;
}

std::vector<int64_t> shuffled(int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::shuffle(order.begin(), order.end(), device().rng);
  return order;
}

// One block: phases run thread by thread in a shuffled order.
struct HostBlock {
  int64_t threads = persistent::kThreads;

  template <typename F>
  void for_threads(const F& f) {
    for (const int64_t thread : shuffled(threads)) {
      f(thread, threads);
    }
  }
  void sync() {}
  // Each output's team: every lane's share, then their sum (the GPU adds
  // them with warp shuffles).
  template <typename scalar_t>
  void dot(
      const Geometry& geo,
      const persistent::Shared<scalar_t>& sh,
      int64_t running) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t outputs = persistent::dot_outputs(geo, running);
    for (const int64_t o : shuffled(outputs)) {
      acc_t sum[persistent::kRowGroup] = {};
      for (int64_t lane = 0; lane < geo.team; ++lane) {
        acc_t part[persistent::kRowGroup] = {};
        persistent::dot_partial(geo, sh, o, lane, part);
        for (int64_t i = 0; i < persistent::kRowGroup; ++i) {
          sum[i] += part[i];
        }
      }
      persistent::dot_store(geo, sh, o, running, sum);
    }
  }
};

// A cooperative launch: every block's shared memory (NaN bytes to start
// with, kept for the whole launch, as on the GPU) and the block Exec.
template <typename scalar_t>
class Grid {
 public:
  Grid(const Geometry& geo, int64_t blocks)
      : geo_(geo),
        blocks_(blocks),
        storage_(
            static_cast<size_t>(blocks),
            std::vector<double>(static_cast<size_t>(geo.shared_bytes / 8 + 2))),
        block_{geo.threads} {
    for (auto& memory : storage_) {
      std::memset(memory.data(), 0xff, memory.size() * sizeof(double));
    }
  }

  // Phase 0: load(b, sh, thread, threads) on every thread of every block.
  template <typename Load>
  void load(const Load& load) {
    for (const int64_t b : shuffled(blocks_)) {
      const persistent::Shared<scalar_t> sh = shared(b);
      block_.for_threads([&](int64_t thread, int64_t threads) {
        load(b, sh, thread, threads);
      });
    }
  }

  // What every block does up to the next grid barrier: run(b, sh, block),
  // the blocks in a shuffled order.
  template <typename Run>
  void step(const Run& run) {
    for (const int64_t b : shuffled(blocks_)) {
      run(b, shared(b), block_);
    }
  }

 private:
  persistent::Shared<scalar_t> shared(int64_t b) {
    return persistent::Shared<scalar_t>(
        geo_,
        reinterpret_cast<unsigned char*>(
            storage_[static_cast<size_t>(b)].data()));
  }

  Geometry geo_;
  int64_t blocks_;
  std::vector<std::vector<double>> storage_;
  HostBlock block_;
};

template <typename scalar_t>
using SharedOf = persistent::Shared<scalar_t>;

template <typename scalar_t>
bool emulate_forward(const persistent::ForwardParams<scalar_t>& p) {
  Grid<scalar_t> grid(p.geo, p.D * p.geo.blocks_per_direction);
  grid.load([&](int64_t b, const SharedOf<scalar_t>& sh, int64_t t, int64_t n) {
    persistent::load_weights(p, persistent::slice_of(p, b), sh, t, n);
  });
  for (int64_t step = 0; step < p.T; ++step) {
    grid.step([&](int64_t b, const SharedOf<scalar_t>& sh, HostBlock& block) {
      persistent::forward_step(p, persistent::slice_of(p, b), sh, step, block);
    });
  }
  ++device().forward_launches;
  return true;
}

template <typename scalar_t>
bool emulate_backward(const persistent::BackwardParams<scalar_t>& p) {
  Grid<scalar_t> grid(p.geo, p.D * p.geo.blocks_per_direction);
  grid.load([&](int64_t b, const SharedOf<scalar_t>& sh, int64_t t, int64_t n) {
    persistent::load_weights_transposed(
        p, persistent::slice_of(p, b), sh, t, n);
  });
  for (int64_t step = 0; step < p.T; ++step) {
    grid.step([&](int64_t b, const SharedOf<scalar_t>&, HostBlock& block) {
      persistent::backward_step_pointwise(
          p, persistent::slice_of(p, b), step, block);
    });
    // grid.sync()
    grid.step([&](int64_t b, const SharedOf<scalar_t>& sh, HostBlock& block) {
      persistent::backward_step_product(
          p, persistent::slice_of(p, b), sh, step, block);
    });
  }
  ++device().backward_launches;
  return true;
}

// The stack kernel: wavefront steps one after another, the blocks of every
// layer in a shuffled order within each.
template <typename scalar_t>
bool emulate_stack(const persistent::StackParams<scalar_t>& p) {
  Grid<scalar_t> grid(p.layers[0].geo, p.L * p.blocks_per_layer);
  grid.load([&](int64_t b, const SharedOf<scalar_t>& sh, int64_t t, int64_t n) {
    persistent::load_stack_weights(p, b, sh, t, n);
  });
  for (int64_t wave = 0; wave < p.layers[0].T + p.L - 1; ++wave) {
    grid.step([&](int64_t b, const SharedOf<scalar_t>& sh, HostBlock& block) {
      persistent::stack_step(p, b, sh, wave, block);
    });
  }
  ++device().stack_launches;
  return true;
}

// The stack backward kernel: per wavefront step, every block's pointwise
// part (dy product, phase A), the grid barrier, every block's phase B.
template <typename scalar_t>
bool emulate_stack_backward(
    const persistent::StackBackwardParams<scalar_t>& p) {
  Grid<scalar_t> grid(p.layers[0].geo, p.L * p.blocks_per_layer);
  grid.load([&](int64_t b, const SharedOf<scalar_t>& sh, int64_t t, int64_t n) {
    persistent::load_stack_backward_weights(p, b, sh, t, n);
  });
  for (int64_t wave = 0; wave < p.layers[0].T + p.L - 1; ++wave) {
    grid.step([&](int64_t b, const SharedOf<scalar_t>& sh, HostBlock& block) {
      persistent::stack_backward_pointwise(p, b, sh, wave, block);
    });
    // grid.sync()
    grid.step([&](int64_t b, const SharedOf<scalar_t>& sh, HostBlock& block) {
      persistent::stack_backward_product(p, b, sh, wave, block);
    });
  }
  ++device().stack_backward_launches;
  return true;
}

template <typename scalar_t>
Geometry emulated_geometry(
    persistent::Pass pass,
    const RNNConfig& cfg,
    int64_t weight_slices = 1) {
  const EmulatedDevice& dev = device();
  return persistent::make_geometry(
      pass,
      cfg.hidden_size,
      cfg.gates,
      cfg.batch,
      std::min(dev.units, cfg.hidden_size),
      dev.tile_rows,
      sizeof(scalar_t),
      sizeof(at::opmath_type<scalar_t>),
      dev.threads,
      weight_slices);
}

// The CUDA backend of common/driver.h with the persistent kernels emulated
// (every layer takes them: the cases have no projection).
struct EmulatedBackend {
  static constexpr const char* kForwardName = "deeprnn_forward_emulated";
  static constexpr const char* kBackwardName = "deeprnn_backward_emulated";
  static int guard(c10::Device /*device*/) {
    return 0;
  }
  static Tensor empty_buffer(
      at::IntArrayRef sizes,
      const at::TensorOptions& options) {
    return at::empty(sizes, options);
  }

  template <typename scalar_t>
  static void forward_layer(
      const RNNConfig& cfg,
      const std::vector<CellParams>& cells,
      int64_t layer,
      const Tensor& layer_input,
      const Tensor& h0,
      const Tensor& c0,
      const LayerReserve& saved,
      const Tensor& y,
      const Tensor& hy,
      const Tensor& cy,
      const LengthsPlan* plan) {
    const bool ran = persistent::forward_layer<scalar_t>(
        cfg,
        cells,
        layer,
        layer_input,
        h0,
        c0,
        saved,
        y,
        hy,
        cy,
        plan,
        emulated_geometry<scalar_t>(persistent::Pass::Forward, cfg),
        emulate_forward<scalar_t>);
    TORCH_CHECK(ran, "the emulated forward launch declined");
  }

  template <typename scalar_t>
  static bool forward_stack(
      const RNNConfig& cfg,
      const std::vector<CellParams>& cells,
      const Tensor& input,
      const Tensor& h0,
      const Tensor& c0,
      const std::vector<LayerReserve>& saved,
      const std::vector<Tensor>& masks,
      const Tensor& output,
      const Tensor& hy,
      const Tensor& cy,
      const LengthsPlan* plan) {
    if (!device().stack || !persistent::stack_applies(cfg)) {
      return false;
    }
    return persistent::forward_stack<scalar_t>(
        cfg,
        cells,
        input,
        h0,
        c0,
        saved,
        masks,
        output,
        hy,
        cy,
        plan,
        emulated_geometry<scalar_t>(persistent::Pass::Forward, cfg, 2),
        emulate_stack<scalar_t>);
  }

  template <typename scalar_t>
  static bool backward_stack(
      const RNNConfig& cfg,
      const std::vector<CellParams>& cells,
      const Tensor& input,
      const Tensor& output,
      const Tensor& h0,
      const Tensor& c0,
      const std::vector<LayerReserve>& saved,
      const Tensor& dy,
      const Tensor& dhy,
      const Tensor& dcy,
      bool need_input_grad,
      bool need_param_grads,
      Tensor& dx,
      const Tensor& dhx,
      const Tensor& dcx,
      std::vector<Tensor>& dparams,
      const LengthsPlan* plan) {
    if (!device().stack || !persistent::stack_applies(cfg)) {
      return false;
    }
    return persistent::backward_stack<scalar_t>(
        cfg,
        cells,
        input,
        output,
        h0,
        c0,
        saved,
        dy,
        dhy,
        dcy,
        need_input_grad,
        need_param_grads,
        dx,
        dhx,
        dcx,
        dparams,
        plan,
        emulated_geometry<scalar_t>(persistent::Pass::Backward, cfg, 2),
        emulate_stack_backward<scalar_t>);
  }

  // cuda/rnn_cuda.cu's backward_layer around the persistent time loop.
  template <typename scalar_t>
  static void backward_layer(
      const RNNConfig& cfg,
      const std::vector<CellParams>& cells,
      int64_t layer,
      const Tensor& layer_input,
      const Tensor& y,
      const Tensor& h0,
      const Tensor& c0,
      const LayerReserve& saved,
      const Tensor& dy,
      const Tensor& dhy,
      const Tensor& dcy,
      bool need_input_grad,
      bool need_param_grads,
      Tensor& dx,
      const Tensor& dhx,
      const Tensor& dcx,
      std::vector<Tensor>& dparams,
      const LengthsPlan* plan) {
    const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
    const int64_t H = cfg.hidden_size, G = cfg.gates;
    const auto opts = y.options();
    const bool lstm = cfg.mode == deeprnn::Mode::LSTM;
    const Tensor dgates_x = at::empty({T, B, D * G * H}, opts);
    const Tensor dgates_h = cfg.mode == deeprnn::Mode::GRU
        ? at::empty({T, B, D * G * H}, opts)
        : dgates_x;
    const Tensor dh_carry = dhy.narrow(0, layer * D, D).clone();
    const Tensor dc_carry =
        lstm ? dcy.narrow(0, layer * D, D).clone() : Tensor();
    const bool ran = persistent::backward_loop<scalar_t>(
        cfg,
        cells,
        layer,
        y,
        h0,
        c0,
        saved,
        dy.contiguous(),
        dgates_x,
        dgates_h,
        dh_carry,
        dc_carry,
        plan,
        emulated_geometry<scalar_t>(persistent::Pass::Backward, cfg),
        emulate_backward<scalar_t>);
    TORCH_CHECK(ran, "the emulated backward launch declined");
    if (dhx.defined()) {
      dhx.narrow(0, layer * D, D).copy_(dh_carry);
    }
    if (dcx.defined()) {
      dcx.narrow(0, layer * D, D).copy_(dc_carry);
    }
    deeprnn::layer_weight_and_input_gradients(
        cfg,
        cells,
        layer,
        layer_input,
        y,
        h0,
        saved,
        dgates_x,
        dgates_h,
        Tensor(),
        need_input_grad,
        need_param_grads,
        dx,
        dparams,
        plan);
  }
};

// ---------------------------------------------------------------------------
// The cases

using ForwardFn =
    std::remove_pointer_t<decltype(&deeprnn::rnn_forward<EmulatedBackend>)>;
using BackwardFn =
    std::remove_pointer_t<decltype(&deeprnn::rnn_backward<EmulatedBackend>)>;

// deeprnn's CPU operators, the reference.
const c10::TypedOperatorHandle<ForwardFn>& cpu_forward() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("deeprnn::_rnn_forward", "")
                             .typed<ForwardFn>();
  return op;
}
const c10::TypedOperatorHandle<BackwardFn>& cpu_backward() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("deeprnn::_rnn_backward", "")
                             .typed<BackwardFn>();
  return op;
}

struct Case {
  std::string mode;
  int64_t T, B, I, H, L;
  bool bidirectional, batch_first, has_biases, with_hx, with_lengths, stack;
  double dropout;
  at::ScalarType dtype;
  int64_t units, tile_rows, threads;

  std::string describe() const {
    std::ostringstream s;
    s << mode << " T=" << T << " B=" << B << " I=" << I << " H=" << H
      << " L=" << L << " D=" << (bidirectional ? 2 : 1)
      << " batch_first=" << batch_first << " biases=" << has_biases
      << " hx=" << with_hx << " lengths=" << with_lengths
      << " dropout=" << dropout << " " << dtype << " | stack=" << stack
      << " units=" << units << " tile_rows=" << tile_rows
      << " threads=" << threads;
    return s.str();
  }
};

Case random_case(std::mt19937_64& rng, at::ScalarType dtype) {
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  static const char* kModes[] = {"lstm", "gru", "rnn_tanh", "rnn_relu"};
  Case c;
  c.mode = kModes[pick(0, 3)];
  c.T = pick(1, 7);
  c.B = pick(1, 11);
  c.I = pick(1, 9);
  c.H = pick(1, 13);
  c.L = pick(1, 3);
  c.bidirectional = pick(0, 1) == 1;
  c.batch_first = pick(0, 1) == 1;
  c.has_biases = pick(0, 3) != 0;
  c.with_hx = pick(0, 1) == 1;
  c.with_lengths = pick(0, 1) == 1;
  c.dropout = pick(0, 3) == 0 ? 0.4 : 0.0;
  c.stack = pick(0, 1) == 1;
  c.dtype = dtype;
  c.units = pick(1, c.H);
  c.tile_rows = persistent::kRowGroup * pick(1, 3);
  static const int64_t kThreadCounts[] = {32, 64, 96, 256};
  c.threads = kThreadCounts[pick(0, 3)];
  return c;
}

int64_t gates_of(const std::string& mode) {
  return mode == "lstm" ? 4 : mode == "gru" ? 3 : 1;
}

// Runs a case through the emulated backend and the CPU kernels and compares
// everything they return.
void check_case(const Case& c, double tol) {
  SCOPED_TRACE(c.describe());
  EmulatedDevice& dev = device();
  dev.units = c.units;
  dev.tile_rows = c.tile_rows;
  dev.threads = c.threads;
  dev.stack = c.stack;
  const auto opts = at::TensorOptions().dtype(c.dtype);
  const int64_t D = c.bidirectional ? 2 : 1, G = gates_of(c.mode);
  const bool lstm = c.mode == "lstm";

  Tensor input = c.batch_first ? at::randn({c.B, c.T, c.I}, opts)
                               : at::randn({c.T, c.B, c.I}, opts);
  std::optional<Tensor> hx, cx, lengths;
  if (c.with_hx) {
    hx = at::randn({c.L * D, c.B, c.H}, opts);
    if (lstm) {
      cx = at::randn({c.L * D, c.B, c.H}, opts);
    }
  }
  if (c.with_lengths) {
    Tensor l = at::randint(1, c.T + 1, {c.B}, at::kLong);
    l[0] = c.T; // the longest runs the whole sequence
    lengths = l.index_select(0, at::randperm(c.B, at::kLong));
  }
  std::vector<Tensor> params;
  for (const auto layer : c10::irange(c.L)) {
    const int64_t in = layer == 0 ? c.I : D * c.H;
    for (const auto d : c10::irange(D)) {
      (void)d;
      params.push_back(at::randn({G * c.H, in}, opts) * 0.5);
      params.push_back(at::randn({G * c.H, c.H}, opts) * 0.5);
      if (c.has_biases) {
        params.push_back(at::randn({G * c.H}, opts) * 0.5);
        params.push_back(at::randn({G * c.H}, opts) * 0.5);
      }
    }
  }

  auto forward = [&](const auto& fn) {
    at::manual_seed(7); // the same dropout masks on both sides
    return fn(
        input,
        hx,
        cx,
        params,
        c.has_biases,
        c.L,
        c.dropout,
        /*train=*/true,
        c.bidirectional,
        c.batch_first,
        c10::string_view(c.mode),
        /*need_reserve=*/true,
        lengths);
  };
  const int64_t launches_before = dev.forward_launches;
  const int64_t stacks_before = dev.stack_launches;
  const auto got = forward(deeprnn::rnn_forward<EmulatedBackend>);
  const auto want =
      forward([](const auto&... args) { return cpu_forward().call(args...); });
  // Unidirectional stacks take the stack kernels when they are on;
  // everything else runs layer by layer.
  const bool stacked = c.stack && !c.bidirectional && c.L >= 2 &&
      c.L <= persistent::kMaxStackLayers;
  ASSERT_EQ(dev.stack_launches - stacks_before, stacked ? 1 : 0);
  ASSERT_EQ(dev.forward_launches - launches_before, stacked ? 0 : c.L);
  EXPECT_TRUE(
      deeprnn_test::tensors_close(std::get<0>(got), std::get<0>(want), tol))
      << "output";
  EXPECT_TRUE(
      deeprnn_test::tensors_close(std::get<1>(got), std::get<1>(want), tol))
      << "hy";
  if (lstm) {
    EXPECT_TRUE(
        deeprnn_test::tensors_close(std::get<2>(got), std::get<2>(want), tol))
        << "cy";
  }
  EXPECT_TRUE(
      deeprnn_test::tensors_close(std::get<3>(got), std::get<3>(want), tol))
      << "reserve";

  // Backward of a random weighted sum of every result, each side on its
  // own forward's reserve.
  const Tensor dy = at::randn_like(std::get<0>(want));
  const Tensor dhy = at::randn_like(std::get<1>(want));
  const std::optional<Tensor> dcy = lstm
      ? std::optional<Tensor>(at::randn_like(std::get<2>(want)))
      : std::nullopt;
  auto backward = [&](const auto& fn, const auto& fwd) {
    return fn(
        input,
        hx,
        cx,
        at::TensorList(params),
        std::get<0>(fwd),
        std::get<3>(fwd),
        std::optional<Tensor>(dy),
        std::optional<Tensor>(dhy),
        dcy,
        c.has_biases,
        c.L,
        c.dropout,
        /*train=*/true,
        c.bidirectional,
        c.batch_first,
        c10::string_view(c.mode),
        std::array<bool, 4>{true, true, true, true},
        lengths);
  };
  const int64_t backward_before = dev.backward_launches;
  const int64_t stack_backward_before = dev.stack_backward_launches;
  const auto grads_got = backward(deeprnn::rnn_backward<EmulatedBackend>, got);
  const auto grads_want = backward(
      [](const auto&... args) { return cpu_backward().call(args...); }, want);
  ASSERT_EQ(
      dev.stack_backward_launches - stack_backward_before, stacked ? 1 : 0);
  ASSERT_EQ(dev.backward_launches - backward_before, stacked ? 0 : c.L);
  EXPECT_TRUE(deeprnn_test::tensors_close(
      std::get<0>(grads_got), std::get<0>(grads_want), tol))
      << "grad input";
  EXPECT_TRUE(deeprnn_test::tensors_close(
      std::get<1>(grads_got), std::get<1>(grads_want), tol))
      << "grad hx";
  EXPECT_TRUE(deeprnn_test::tensors_close(
      std::get<2>(grads_got), std::get<2>(grads_want), tol))
      << "grad cx";
  const auto& pg = std::get<3>(grads_got);
  const auto& pw = std::get<3>(grads_want);
  ASSERT_EQ(pg.size(), pw.size());
  for (const auto i : c10::irange(pg.size())) {
    EXPECT_TRUE(deeprnn_test::tensors_close(pg[i], pw[i], tol))
        << "grad params[" << i << "]";
  }
}

// float64: the two sides differ by summation order only.
TEST(CudaEmulation, PersistentKernelsMatchTheCpuKernelsInFloat64) {
  std::mt19937_64 rng(20261207);
  device().rng.seed(1);
  for (int i = 0; i < 300; ++i) {
    check_case(random_case(rng, at::kDouble), 1e-10);
    if (::testing::Test::HasFailure()) {
      return; // the first failing case is the one to read
    }
  }
}

// float32, with more batch rows than a tile (several tiles per step).
TEST(CudaEmulation, PersistentKernelsMatchTheCpuKernelsInFloat32) {
  std::mt19937_64 rng(7);
  device().rng.seed(2);
  for (int i = 0; i < 60; ++i) {
    Case c = random_case(rng, at::kFloat);
    c.B = 9 + i % 30;
    check_case(c, 2e-4);
    if (::testing::Test::HasFailure()) {
      return;
    }
  }
}

// The stack kernels (the wavefront across the layers) on every stack they
// take: one direction, 2 to kMaxStackLayers layers, a third with dropout
// between them (drawn before the launch, the same masks as the CPU's drawn
// between layers); and a stack one layer deeper, which they leave to the
// layer-by-layer kernels.
TEST(CudaEmulation, StackKernelMatchesTheCpuKernels) {
  std::mt19937_64 rng(31);
  device().rng.seed(3);
  for (int i = 0; i < 160; ++i) {
    // float32 on a quarter of the shallow stacks (through 8 or 9 layers its
    // rounding grows past a fixed tolerance).
    const bool float64 = i % 4 != 3 || i >= 150;
    Case c = random_case(rng, float64 ? at::kDouble : at::kFloat);
    c.bidirectional = false;
    c.dropout = i % 3 == 0 ? 0.4 : 0.0; // the same masks on both sides
    c.stack = true;
    c.L = i < 150 ? 2 + i % 3 : persistent::kMaxStackLayers + i % 2;
    if (!float64) {
      c.B = 9 + i % 30; // several batch tiles
    }
    check_case(c, float64 ? 1e-10 : 2e-4);
    if (::testing::Test::HasFailure()) {
      return;
    }
  }
}

// ---------------------------------------------------------------------------
// The CUDA graphs' cache (cuda/loop_graphs.h)

struct FakeGraph {
  int id = 0;
};
using GraphCache = deeprnn::cuda::LoopGraphCache<FakeGraph>;
using deeprnn::cuda::LoopKey;

LoopKey key_of(const std::vector<Tensor>& buffers, int64_t extra = 0) {
  LoopKey key;
  key.add(extra);
  for (const Tensor& buffer : buffers) {
    key.add(buffer);
  }
  return key;
}

TEST(CudaLoopGraphs, FirstSightEagerSecondCapturesThenReplays) {
  GraphCache cache(8);
  const Tensor a = at::randn({3, 4});
  const LoopKey key = key_of({a});
  EXPECT_EQ(cache.lookup(key).first, GraphCache::Action::kEager);
  EXPECT_EQ(cache.lookup(key).first, GraphCache::Action::kCapture);
  // Another thread meanwhile: eager, not a second capture.
  EXPECT_EQ(cache.lookup(key).first, GraphCache::Action::kEager);
  cache.captured(key, std::make_shared<FakeGraph>(FakeGraph{42}));
  for (int i = 0; i < 3; ++i) {
    const auto [action, graph] = cache.lookup(key);
    ASSERT_EQ(action, GraphCache::Action::kReplay);
    ASSERT_NE(graph, nullptr);
    EXPECT_EQ(graph->id, 42);
  }
  EXPECT_EQ(cache.stats(), (std::vector<int64_t>{1, 1, 1, 3}));
}

TEST(CudaLoopGraphs, KeysDifferInEveryBufferPropertyAndSetting) {
  const Tensor a = at::randn({4, 6});
  const Tensor b = at::randn({4, 6});
  const LoopKey base = key_of({a, b});
  EXPECT_TRUE(base == key_of({a, b}));
  EXPECT_EQ(base.hash(), key_of({a, b}).hash());
  const std::vector<LoopKey> others = {
      key_of({a, b}, 1), // a setting
      key_of({b, a}), // the buffers' order
      key_of({a, a}), // an address
      key_of({a, b.view({6, 4})}), // sizes
      key_of({a, b.t()}), // strides (and sizes)
      key_of({a, b.as_strided({4, 6}, {1, 4})}), // strides alone
      key_of({a, b.to(at::kDouble)}), // dtype (and address)
      key_of({a, b.narrow(1, 1, 5)}), // an offset view
      key_of({a, Tensor()}), // undefined
      key_of({a}), // fewer buffers
  };
  for (size_t i = 0; i < others.size(); ++i) {
    EXPECT_FALSE(base == others[i]) << "variant " << i;
  }
  LoopKey with_plan = key_of({a});
  with_plan.add(std::vector<int64_t>{3, 2, 1});
  LoopKey other_plan = key_of({a});
  other_plan.add(std::vector<int64_t>{3, 2});
  other_plan.add(int64_t{1});
  EXPECT_FALSE(with_plan == other_plan); // lengths are part of a list
}

TEST(CudaLoopGraphs, LeastRecentlyUsedKeysLeaveFirst) {
  GraphCache cache(2);
  const Tensor t = at::randn({2});
  const LoopKey a = key_of({t}, 1), b = key_of({t}, 2), c = key_of({t}, 3);
  cache.lookup(a);
  ASSERT_EQ(cache.lookup(a).first, GraphCache::Action::kCapture);
  const auto graph = std::make_shared<FakeGraph>(FakeGraph{7});
  cache.captured(a, graph);
  cache.lookup(b);
  cache.lookup(a); // a is the most recent again
  cache.lookup(c); // b leaves
  EXPECT_EQ(cache.lookup(a).first, GraphCache::Action::kReplay);
  EXPECT_EQ(cache.lookup(b).first, GraphCache::Action::kEager); // seen anew
  cache.lookup(c); // now c, then b: a leaves, graph and all
  EXPECT_EQ(cache.lookup(a).first, GraphCache::Action::kEager);
  EXPECT_EQ(cache.stats()[0], 2);
  EXPECT_EQ(graph->id, 7); // a holder keeps its graph alive
  // A capture reported after its key left is dropped.
  cache.lookup(b);
  ASSERT_EQ(cache.lookup(b).first, GraphCache::Action::kCapture);
  cache.lookup(c);
  cache.lookup(a); // b leaves
  cache.captured(b, std::make_shared<FakeGraph>());
  EXPECT_EQ(cache.stats()[1], 0);
}

TEST(CudaLoopGraphs, AFailedCaptureRunsEagerlyFromThenOn) {
  GraphCache cache(4);
  const LoopKey key = key_of({at::randn({5})});
  cache.lookup(key);
  ASSERT_EQ(cache.lookup(key).first, GraphCache::Action::kCapture);
  cache.capture_failed(key);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(cache.lookup(key).first, GraphCache::Action::kEager);
  }
  cache.clear();
  EXPECT_EQ(cache.stats()[0], 0);
}

} // namespace
