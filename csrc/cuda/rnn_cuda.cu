// CUDA kernels of deeprnn::_rnn_forward and deeprnn::_rnn_backward.
//
// CUDA backend
// ------------
// What it does: the general path of DESIGN.md §3 for every mode (lstm, gru,
// rnn_tanh, rnn_relu), any number of layers, one or two directions, dropout
// between layers, LSTM projection, variable lengths, and float32, float64,
// float16 and bfloat16 (the pointwise math accumulates half types in float,
// at::opmath_type). Same checks (common/config.h, so the same messages), the
// same reserve layout and size as the CPU kernels, and the same results up
// to rounding. Per layer:
//   - forward: ONE GEMM projects the input of every step and both
//     directions, X [T*B, I_l] @ [W_ih_fwd; W_ih_rev]^T, straight into the
//     reserve's gates (a scratch buffer in inference). Each step then runs
//     one batched GEMM h_{t-1} W_hh^T for both directions (at::bmm over a
//     [D, B, P] running state) and ONE fused pointwise kernel for both
//     directions (cuda/cell_kernels.cuh) that adds the biases, applies the
//     gates and writes h_t straight into its slice of the layer output, the
//     running state and the reserve. LSTM with projection adds a GEMM per
//     direction, h_t = m_t W_hr^T, and a copy of h_t into the output.
//   - backward: per step one fused kernel for both directions and one
//     batched GEMM dh_{t-1} += dG_t W_hh for both directions; the weight
//     gradients are GEMMs over all steps after the loop, and dX = dG W_ih
//     feeds the layer below (as on the CPU).
//   - GEMMs go through ATen (at::mm_out, at::bmm_out, baddbmm_), hence
//     cuBLAS, torch's TF32 and reduced-precision settings, and the current
//     stream. Kernels run on c10::cuda::getCurrentCUDAStream() under a
//     CUDAGuard on the input's device, each followed by
//     C10_CUDA_KERNEL_LAUNCH_CHECK(). The time loop allocates nothing: every
//     buffer is allocated per layer and the loop only takes views.
//   - dropout masks come from at::bernoulli_ on the input's device (that
//     device's default generator, so torch.manual_seed reproduces a run) and
//     are kept in the reserve as on the CPU.
//   - lengths: the batch runs sorted by decreasing length (LengthsPlan); a
//     step works on the rows still running and the rest write zeros. lengths
//     on the CPU are read on the host without a device sync; lengths on the
//     GPU are copied to the host first, which synchronises with the stream
//     (once in forward, once in backward).
// Fast paths (DESIGN.md §3 item 5), all behind the switch
// DEEPRNN_CUDA_FAST_PATH / deeprnn::_cuda_fast_path (off by default: not yet
// verified on a GPU):
//   - persistent kernels (cuda/persistent.cuh) take a layer's forward, and
//     the time loop of its backward, where the layer fits;
//   - the stack kernels (cuda/persistent.cuh, the wavefront) take the
//     whole forward, and the time loops of the whole backward, of a
//     unidirectional stack of 2 to 8 layers where all of it fits
//     (CudaBackend::forward_stack / backward_stack, tried by the driver before
//     its layer loops);
//   - every other layer and pass runs the general path above, whose time
//     loops go through CUDA graphs (cuda/loop_graphs.h, run_time_loop
//     below): captured on a key's second sight, replayed after, so that T
//     steps cost one launch instead of a few per step.

#include "common/config.h"
#include "common/driver.h"
#include "common/layers.h"
#include "cuda/cell_kernels.cuh"
#include "cuda/loop_graphs.h"
#include "cuda/persistent.cuh"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace deeprnn {
namespace {

using at::Tensor;

// [D, G*H, P]: W_hh of both directions for the batched recurrent GEMMs.
Tensor stacked_recurrent_weights(
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer) {
  if (cfg.num_directions == 1) {
    return cells[layer].w_hh.unsqueeze(0);
  }
  return at::stack({cells[2 * layer].w_hh, cells[2 * layer + 1].w_hh});
}

// ---------------------------------------------------------------------------
// Views for the kernels

// A time-major layer buffer t [T, B, D*width] (or one step of it, [B,
// D*width], with no time stride), direction d at columns [d*width,
// (d+1)*width). Empty for an undefined tensor.
template <typename T>
cuda::StepView<T> sequence_view(const Tensor& t, int64_t width) {
  cuda::StepView<T> view;
  if (!t.defined()) {
    return view;
  }
  TORCH_INTERNAL_ASSERT(t.stride(-1) == 1);
  view.data = t.data_ptr<std::remove_const_t<T>>();
  view.time_stride = t.dim() == 3 ? t.stride(0) : 0;
  view.row_stride = t.stride(-2);
  view.dir_stride = width;
  return view;
}

// A per-direction state t [D, B, width]. Empty for an undefined tensor.
template <typename T>
cuda::StepView<T> state_view(const Tensor& t) {
  cuda::StepView<T> view;
  if (!t.defined()) {
    return view;
  }
  TORCH_INTERNAL_ASSERT(t.dim() == 3 && t.stride(2) == 1);
  view.data = t.data_ptr<std::remove_const_t<T>>();
  view.row_stride = t.stride(1);
  view.dir_stride = t.stride(0);
  return view;
}

// Launches a step kernel over directions * batch * width elements on the
// current stream. A grid-stride loop covers what the grid does not.
template <typename Args>
void launch_step(void (*kernel)(Args), const Args& args) {
  constexpr int kThreads = 256;
  constexpr int64_t kMaxBlocks = int64_t{1} << 16;
  const cuda::StepInfo& step = args.step;
  const int64_t n = step.directions * step.batch * step.width;
  if (n == 0) {
    return;
  }
  const int64_t blocks = std::min((n + kThreads - 1) / kThreads, kMaxBlocks);
  kernel<<<
      static_cast<unsigned int>(blocks),
      kThreads,
      0,
      c10::cuda::getCurrentCUDAStream()>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---------------------------------------------------------------------------
// CUDA graphs of the time loops (cuda/loop_graphs.h)

// Whether the general path's time loops go through CUDA graphs: with the
// fast-path switch (they too wait for a GPU run to be verified), unless
// DEEPRNN_CUDA_FAST_PATH_GRAPHS=0.
bool loop_graphs_enabled() {
  static const bool allowed = [] {
    const char* value = std::getenv("DEEPRNN_CUDA_FAST_PATH_GRAPHS");
    return value == nullptr || std::string(value) != "0";
  }();
  return allowed && cuda::fast_path_enabled();
}

cuda::LoopGraphCache<at::cuda::CUDAGraph>& loop_graphs() {
  // Enough for the layers and passes of a few models of fixed shapes, each
  // with its buffers alternating between two blocks of the allocator. Never
  // destroyed: at exit the graphs would go back to a caching allocator that
  // may already be gone.
  static auto* cache = new cuda::LoopGraphCache<at::cuda::CUDAGraph>(256);
  return *cache;
}

// The private operator deeprnn::_cuda_loop_graphs (ops/schemas.cpp) counts
// the captures and replays, so that tests can tell what ran.
void count_graph(bool captured) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("deeprnn::_cuda_loop_graphs", "")
          .typed<std::vector<int64_t>(int64_t, int64_t)>();
  op.call(captured ? 1 : 0, captured ? 0 : 1);
}

// The key of a time loop of layer `layer`: what its launches depend on,
// `buffers` being every tensor the loop reads or writes besides the
// layer's weights (added here: W_hh through the caller's buffers, W_hr
// with projection).
cuda::LoopKey loop_key(
    int64_t pass,
    const RNNConfig& cfg,
    const std::vector<CellParams>& cells,
    int64_t layer,
    const LengthsPlan* plan,
    const Tensor& like,
    std::initializer_list<Tensor> buffers) {
  auto& context = at::globalContext();
  cuda::LoopKey key;
  key.add(pass)
      .add(like.get_device())
      .add(static_cast<int64_t>(like.scalar_type()))
      .add(static_cast<int64_t>(cfg.mode))
      .add(
          {cfg.seq_len,
           cfg.batch,
           cfg.hidden_size,
           cfg.proj_size,
           cfg.num_directions,
           cfg.gates,
           cfg.has_proj ? 1 : 0})
      // cuBLAS's kernels follow these settings at capture
      .add(context.allowTF32CuBLAS() ? 1 : 0)
      .add(static_cast<int64_t>(context.allowFP16ReductionCuBLAS()))
      .add(static_cast<int64_t>(context.allowBF16ReductionCuBLAS()))
      .add(context.allowFP16AccumulationCuBLAS() ? 1 : 0);
  if (plan != nullptr) {
    key.add(plan->active);
  } else {
    key.add(-1);
  }
  for (const Tensor& buffer : buffers) {
    key.add(buffer);
  }
  if (cfg.has_proj) {
    for (const auto d : c10::irange(cfg.num_directions)) {
      key.add(cells[layer * cfg.num_directions + d].w_hr);
    }
  }
  return key;
}

// Runs `loop` (a time loop whose launches depend on nothing but the key
// `make_key()` returns) on the current stream: eagerly, or captured into a
// CUDA graph and replayed (cuda/loop_graphs.h for the policy). A stream that
// is itself being captured (the caller's own CUDA graph) runs it eagerly
// into that capture. With the graphs off, the key is never made.
template <typename MakeKey, typename Loop>
void run_time_loop(
    const MakeKey& make_key,
    const at::TensorOptions& options,
    const Loop& loop) {
  if (!loop_graphs_enabled()) {
    loop();
    return;
  }
  const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream();
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(current.stream(), &status));
  if (status != cudaStreamCaptureStatusNone) {
    loop();
    return;
  }
  using Action = cuda::LoopGraphCache<at::cuda::CUDAGraph>::Action;
  const cuda::LoopKey key = make_key();
  auto [action, graph] = loop_graphs().lookup(key);
  if (action == Action::kReplay) {
    graph->replay();
    count_graph(false);
    return;
  }
  if (action == Action::kEager) {
    loop();
    return;
  }
  // Captured on a side stream (torch refuses the default stream), with
  // this thread's calls alone held to the capture rules; nothing runs
  // during a capture, so the replay on the current stream then runs the
  // loop after the work queued before it.
  auto captured = std::make_shared<at::cuda::CUDAGraph>();
  try {
    const c10::cuda::CUDAStream side =
        c10::cuda::getStreamFromPool(false, current.device_index());
    c10::cuda::CUDAStreamGuard on_side(side);
    // cuBLAS's handles and workspaces for the side stream, set up before
    // the capture rather than inside it (as torch.cuda.graph's warm-up
    // does): the loop's kinds of GEMM once on tiny matrices.
    {
      const Tensor tiny = at::ones({1, 1, 1}, options);
      (void)at::bmm(tiny, tiny);
      (void)at::mm(tiny[0], tiny[0]);
    }
    captured->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    try {
      loop();
    } catch (...) {
      captured->capture_end(); // leaves the side stream usable
      throw;
    }
    captured->capture_end();
  } catch (const std::exception& error) {
    loop_graphs().capture_failed(key);
    TORCH_WARN_ONCE(
        "deeprnn: capturing a time loop as a CUDA graph failed (",
        error.what(),
        "); such loops run without graphs");
    (void)cudaGetLastError();
    loop();
    return;
  }
  captured->replay();
  loop_graphs().captured(key, captured);
  count_graph(true);
}

// ---------------------------------------------------------------------------
// Forward

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
  // The persistent kernel where the switch is on and the layer fits it
  // (cuda/persistent.cuh); the general path below otherwise.
  if (cuda::try_persistent_forward_layer<scalar_t>(
          cfg, cells, layer, layer_input, h0, c0, saved, y, hy, cy, plan)) {
    return;
  }
  const int64_t T = cfg.seq_len, B = cfg.batch, D = cfg.num_directions;
  const int64_t H = cfg.hidden_size, P = cfg.proj_size, G = cfg.gates;
  const auto opts = layer_input.options();
  const bool lstm = cfg.mode == Mode::LSTM;

  // The input projection of every step and both directions in one GEMM,
  // into the reserve in training (RNN keeps no gates: always a scratch).
  Tensor gates =
      saved.gates.defined() ? saved.gates : at::empty({T, B, D * G * H}, opts);
  {
    Tensor gates_2d = gates.view({T * B, D * G * H});
    at::mm_out(
        gates_2d,
        layer_input.view({T * B, layer_input.size(2)}),
        stacked_input_weights(cfg, cells, layer).t());
  }
  const Tensor bias_x = input_bias(cfg, cells, layer, opts); // [D, G*H]
  const Tensor bias_hn = cfg.mode == Mode::GRU
      ? recurrent_bias(cfg, cells, layer, opts)
      : Tensor(); // [D, H]
  // [D, P, G*H] (a transposed view: cuBLAS reads it as is)
  const Tensor w_hh_t =
      stacked_recurrent_weights(cfg, cells, layer).transpose(1, 2);

  // The running state of both directions, starting at h0 (and c0). Rows that
  // have not started yet (reverse direction with lengths) still hold h0
  // when their first step reads them; rows that have ended keep their last
  // state, which is hy (and cy) once the loop is done.
  Tensor h_state = h0.narrow(0, layer * D, D).clone(); // [D, B, P]
  Tensor c_state =
      lstm ? c0.narrow(0, layer * D, D).clone() : Tensor(); // [D, B, H]
  Tensor recurrent = at::empty({D, B, G * H}, opts); // h_{t-1} W_hh^T
  // LSTM with projection: o * tanh(c_t) before W_hr, kept in the reserve in
  // training, else one step's worth reused by every step.
  Tensor hidden;
  if (cfg.has_proj) {
    hidden =
        saved.hidden.defined() ? saved.hidden : at::empty({B, D * H}, opts);
  }

  auto active = [&](int64_t t) {
    return plan != nullptr ? plan->active[t] : B;
  };

  cuda::StepInfo step_info;
  step_info.directions = D;
  step_info.batch = B;
  step_info.width = H;

  // The loop's launches depend on these buffers, the sizes and the plan:
  // the key of its CUDA graph.
  auto make_key = [&] {
    return loop_key(
        0,
        cfg,
        cells,
        layer,
        plan,
        y,
        {gates,
         recurrent,
         h_state,
         c_state,
         saved.cells,
         hidden,
         y,
         bias_x,
         bias_hn,
         w_hh_t});
  };
  run_time_loop(make_key, opts, [&] {
    for (const auto step : c10::irange(T)) {
      int64_t rows_max = 0;
      for (const auto d : c10::irange(D)) {
        step_info.time[d] = d == 0 ? step : T - 1 - step;
        step_info.active[d] = active(step_info.time[d]);
        rows_max = std::max(rows_max, step_info.active[d]);
      }
      // Rows past rows_max are idle in both directions; within it, a row idle
      // in one direction costs a little GEMM work that nobody reads.
      if (rows_max > 0) {
        Tensor recurrent_rows = recurrent.narrow(1, 0, rows_max);
        at::bmm_out(recurrent_rows, h_state.narrow(1, 0, rows_max), w_hh_t);
      }

      switch (cfg.mode) {
        case Mode::LSTM: {
          cuda::LSTMForwardArgs<scalar_t> args;
          args.step = step_info;
          args.gates = sequence_view<scalar_t>(gates, G * H);
          args.recurrent = state_view<const scalar_t>(recurrent);
          args.bias = bias_x.data_ptr<scalar_t>();
          args.c_state = state_view<scalar_t>(c_state);
          args.c_saved = sequence_view<scalar_t>(saved.cells, H);
          args.h_out = sequence_view<scalar_t>(cfg.has_proj ? hidden : y, H);
          args.h_state = cfg.has_proj ? cuda::StepView<scalar_t>()
                                      : state_view<scalar_t>(h_state);
          args.y = sequence_view<scalar_t>(y, P);
          args.proj = P;
          args.has_proj = cfg.has_proj;
          launch_step(cuda::lstm_forward_step<scalar_t>, args);
          if (cfg.has_proj) {
            // h_t = m_t W_hr^T for the running rows of each direction, into
            // the running state, then into the output.
            for (const auto d : c10::irange(D)) {
              const int64_t t = step_info.time[d];
              const int64_t rows = step_info.active[d];
              if (rows == 0) {
                continue;
              }
              const Tensor m_t =
                  hidden.dim() == 3 ? hidden.select(0, t) : hidden; // [B, D*H]
              Tensor h_rows = h_state.select(0, d).narrow(0, 0, rows);
              at::mm_out(
                  h_rows,
                  m_t.narrow(1, d * H, H).narrow(0, 0, rows),
                  cells[layer * D + d].w_hr.t());
              y.select(0, t)
                  .narrow(1, d * P, P)
                  .narrow(0, 0, rows)
                  .copy_(h_rows);
            }
          }
          break;
        }
        case Mode::GRU: {
          cuda::GRUForwardArgs<scalar_t> args;
          args.step = step_info;
          args.gates = sequence_view<scalar_t>(gates, G * H);
          args.recurrent = state_view<const scalar_t>(recurrent);
          args.bias = bias_x.data_ptr<scalar_t>();
          args.bias_hn = bias_hn.data_ptr<scalar_t>();
          args.h_state = state_view<scalar_t>(h_state);
          args.hn_saved = sequence_view<scalar_t>(saved.cells, H);
          args.y = sequence_view<scalar_t>(y, H);
          launch_step(cuda::gru_forward_step<scalar_t>, args);
          break;
        }
        case Mode::RNN_TANH:
        case Mode::RNN_RELU: {
          cuda::RNNForwardArgs<scalar_t> args;
          args.step = step_info;
          args.gates = sequence_view<const scalar_t>(gates, H);
          args.recurrent = state_view<const scalar_t>(recurrent);
          args.bias = bias_x.data_ptr<scalar_t>();
          args.h_state = state_view<scalar_t>(h_state);
          args.y = sequence_view<scalar_t>(y, H);
          args.relu = cfg.mode == Mode::RNN_RELU;
          launch_step(cuda::rnn_forward_step<scalar_t>, args);
          break;
        }
      }
    }
  });
  hy.narrow(0, layer * D, D).copy_(h_state);
  if (lstm) {
    cy.narrow(0, layer * D, D).copy_(c_state);
  }
}

// ---------------------------------------------------------------------------
// Backward

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
  const bool gru = cfg.mode == Mode::GRU;
  const bool lstm = cfg.mode == Mode::LSTM;

  // Gradients of the pre-activations of every step: dG_x feeds W_ih, b_ih
  // and dx; dG_h feeds W_hh, b_hh and the recurrence. They differ only for
  // GRU (the n gate's recurrent part is scaled by r).
  Tensor dgates_x = at::empty({T, B, D * G * H}, opts);
  Tensor dgates_h = gru ? at::empty({T, B, D * G * H}, opts) : dgates_x;
  // dG_h of the current step of both directions, for the batched GEMM.
  Tensor dgates_step = at::empty({D, B, G * H}, opts);
  // Gradient flowing from step t+1 into h_t (and c_t), per direction.
  Tensor dh_carry = dhy.narrow(0, layer * D, D).clone(); // [D, B, P]
  Tensor dc_carry =
      lstm ? dcy.narrow(0, layer * D, D).clone() : Tensor(); // [D, B, H]
  // With projection: the full gradient of each projected h_t (for dW_hr),
  // and the gradient of o * tanh(c_t) of the current step.
  Tensor dh_total = cfg.has_proj ? at::empty({T, B, D * P}, opts) : Tensor();
  Tensor dh_pre_projection =
      cfg.has_proj ? at::empty({D, B, H}, opts) : Tensor();
  const Tensor w_hh = stacked_recurrent_weights(cfg, cells, layer); // [D,GH,P]
  const Tensor h_initial = h0.narrow(0, layer * D, D); // [D, B, P]
  const Tensor c_initial =
      lstm ? c0.narrow(0, layer * D, D) : Tensor(); // [D, B, H]

  auto active = [&](int64_t t) {
    return plan != nullptr ? plan->active[t] : B;
  };

  cuda::StepInfo step_info;
  step_info.directions = D;
  step_info.batch = B;
  step_info.width = H;

  // The persistent backward loop where the switch is on and the layer fits
  // (cuda/persistent.cuh): it fills dgates_x (dgates_h) and the carries as
  // the loop below does; the weight gradients after the loop serve both.
  const bool persistent = cuda::try_persistent_backward_loop<scalar_t>(
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
      plan);
  if (!persistent) {
    // The general loop where the persistent one did not run, through a CUDA
    // graph keyed by its buffers, sizes and plan (as in forward).
    auto make_key = [&] {
      return loop_key(
          1,
          cfg,
          cells,
          layer,
          plan,
          y,
          {dgates_x,
           dgates_h,
           dgates_step,
           dh_carry,
           dc_carry,
           dh_total,
           dh_pre_projection,
           w_hh,
           h_initial,
           c_initial,
           saved.gates,
           saved.cells,
           y,
           dy});
    };
    run_time_loop(make_key, opts, [&] {
      for (const auto step : c10::irange(T)) {
        int64_t rows_max = 0;
        for (const auto d : c10::irange(D)) {
          // Backward visits the steps in the opposite order of forward.
          const int64_t t = d == 0 ? T - 1 - step : step;
          const bool first_in_forward = d == 0 ? t == 0 : t == T - 1;
          const int64_t t_prev = d == 0 ? t - 1 : t + 1;
          const int64_t rows = active(t);
          step_info.time[d] = t;
          step_info.active[d] = rows;
          step_info.previous[d] = t_prev;
          // Rows [0, resumed) read step t_prev's state, rows [resumed, rows)
          // read h0 (and c0), as in forward.
          step_info.resumed[d] =
              first_in_forward ? 0 : std::min(rows, active(t_prev));
          rows_max = std::max(rows_max, rows);
        }

        switch (cfg.mode) {
          case Mode::LSTM: {
            cuda::LSTMBackwardArgs<scalar_t> args;
            if (cfg.has_proj) {
              cuda::ProjectedGradArgs<scalar_t> projected;
              projected.step = step_info;
              projected.step.width = P;
              projected.dy = sequence_view<const scalar_t>(dy, P);
              projected.dh_carry = state_view<scalar_t>(dh_carry);
              projected.dh_total = sequence_view<scalar_t>(dh_total, P);
              launch_step(cuda::projected_grad_step<scalar_t>, projected);
              for (const auto d : c10::irange(D)) {
                const int64_t rows = step_info.active[d];
                if (rows == 0) {
                  continue;
                }
                Tensor dm_rows =
                    dh_pre_projection.select(0, d).narrow(0, 0, rows);
                at::mm_out(
                    dm_rows,
                    dh_total.select(0, step_info.time[d])
                        .narrow(1, d * P, P)
                        .narrow(0, 0, rows),
                    cells[layer * D + d].w_hr);
              }
              args.dh = state_view<const scalar_t>(dh_pre_projection);
            } else {
              args.dh = sequence_view<const scalar_t>(dy, H);
              args.dh_carry = state_view<scalar_t>(dh_carry);
            }
            args.step = step_info;
            args.gates = sequence_view<const scalar_t>(saved.gates, G * H);
            args.cells = sequence_view<const scalar_t>(saved.cells, H);
            args.c_initial = state_view<const scalar_t>(c_initial);
            args.dc = state_view<scalar_t>(dc_carry);
            args.dgates = sequence_view<scalar_t>(dgates_x, G * H);
            args.dgates_step = state_view<scalar_t>(dgates_step);
            launch_step(cuda::lstm_backward_step<scalar_t>, args);
            break;
          }
          case Mode::GRU: {
            cuda::GRUBackwardArgs<scalar_t> args;
            args.step = step_info;
            args.gates = sequence_view<const scalar_t>(saved.gates, G * H);
            args.hn = sequence_view<const scalar_t>(saved.cells, H);
            args.y = sequence_view<const scalar_t>(y, H);
            args.h_initial = state_view<const scalar_t>(h_initial);
            args.dy = sequence_view<const scalar_t>(dy, H);
            args.dh_carry = state_view<scalar_t>(dh_carry);
            args.dgates_x = sequence_view<scalar_t>(dgates_x, G * H);
            args.dgates_h = sequence_view<scalar_t>(dgates_h, G * H);
            args.dgates_step = state_view<scalar_t>(dgates_step);
            launch_step(cuda::gru_backward_step<scalar_t>, args);
            break;
          }
          case Mode::RNN_TANH:
          case Mode::RNN_RELU: {
            cuda::RNNBackwardArgs<scalar_t> args;
            args.step = step_info;
            args.y = sequence_view<const scalar_t>(y, H);
            args.dy = sequence_view<const scalar_t>(dy, H);
            args.dh_carry = state_view<scalar_t>(dh_carry);
            args.dgates = sequence_view<scalar_t>(dgates_x, H);
            args.dgates_step = state_view<scalar_t>(dgates_step);
            args.relu = cfg.mode == Mode::RNN_RELU;
            launch_step(cuda::rnn_backward_step<scalar_t>, args);
            break;
          }
        }
        // dh_{t-1} += dG_t W_hh for both directions. The kernels consumed the
        // carry of the running rows and gave the idle rows a zero dG, so the
        // idle rows keep their carry (dhy not yet reached, or dhx already
        // final).
        if (rows_max > 0) {
          dh_carry.narrow(1, 0, rows_max)
              .baddbmm_(dgates_step.narrow(1, 0, rows_max), w_hh);
        }
      }
    });
  }

  if (dhx.defined()) {
    dhx.narrow(0, layer * D, D).copy_(dh_carry);
  }
  if (dcx.defined()) {
    dcx.narrow(0, layer * D, D).copy_(dc_carry);
  }

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
}

struct CudaBackend {
  static constexpr const char* kForwardName = "deeprnn_forward_cuda";
  static constexpr const char* kBackwardName = "deeprnn_backward_cuda";
  static c10::cuda::CUDAGuard guard(c10::Device device) {
    return c10::cuda::CUDAGuard(device);
  }
  // The CUDA caching allocator already keeps freed blocks.
  static at::Tensor empty_buffer(
      at::IntArrayRef sizes,
      const at::TensorOptions& options) {
    return at::empty(sizes, options);
  }
  template <typename scalar_t, typename... Args>
  static void forward_layer(Args&&... args) {
    deeprnn::forward_layer<scalar_t>(std::forward<Args>(args)...);
  }
  template <typename scalar_t, typename... Args>
  static void backward_layer(Args&&... args) {
    deeprnn::backward_layer<scalar_t>(std::forward<Args>(args)...);
  }
  // The wavefront across the layers (the stack kernel) where it applies and
  // fits; false otherwise, and the layers run one by one.
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
    return cuda::try_persistent_forward_stack<scalar_t>(
        cfg, cells, input, h0, c0, saved, masks, output, hy, cy, plan);
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
    return cuda::try_persistent_backward_stack<scalar_t>(
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
        plan);
  }
};
static_assert(
    HasForwardStack<CudaBackend>::value && HasBackwardStack<CudaBackend>::value,
    "the driver must find CudaBackend's forward_stack and backward_stack");

} // namespace

TORCH_LIBRARY_IMPL(deeprnn, CUDA, m) {
  m.impl("_rnn_forward", &rnn_forward<CudaBackend>);
  m.impl("_rnn_backward", &rnn_backward<CudaBackend>);
}

} // namespace deeprnn
