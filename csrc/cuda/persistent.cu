// The persistent kernels (cuda/persistent.cuh), forward layer, backward
// time loop and the stack kernels (the wavefront across a unidirectional
// stack's layers, forward and backward): the cooperative launches, the check
// that a layer (a stack) fits a co-resident grid, and the process-wide switch
// of the CUDA fast paths.
//
// Status: UNVERIFIED. Written and compile-checked on machines without a
// GPU; their per-block code runs there in a host emulation
// (tests/cpp/test_cuda_emulation.cpp: the same __host__ __device__
// functions, threads and blocks as loops in shuffled orders, against the
// CPU kernels, in CI). They are off unless DEEPRNN_CUDA_FAST_PATH=1 or
// deeprnn::_cuda_fast_path(1) turns them on, until a GPU run of
// tests/python/test_cuda.py (scripts/gpu_check.sh runs every test with the
// switch off and on) has verified them.
//
// What takes them, per layer and per pass: the switch on, no LSTM
// projection, any mode, float32, float64, float16 or bfloat16, a device with
// cooperative launch, contiguous buffers (the driver's are), and a geometry
// whose W_hh slices fit in the shared memory of a co-resident grid
// (choose_geometry). Everything else falls back to the general path, layer
// by layer and pass by pass: a forward on the fast path leaves the general
// path's reserve, and either backward runs on either reserve. Around the
// backward loop the weight gradients and dx stay the general path's GEMMs.
// A whole forward takes the stack kernel first where stack_applies (one
// direction, 2 to 8 layers, no projection; dropout between them or not) and
// all its layers' W_hh and W_ih slices fit at once; a stack's backward
// takes the stack backward kernel under the same conditions (its time
// loops; the GEMMs after them as on the general path).
// DEEPRNN_CUDA_FAST_PATH_WAVEFRONT=0 turns both off (the layers then take
// the kernels above one by one). The general path's time loops go through
// CUDA graphs with the same switch (cuda/loop_graphs.h, cuda/rnn_cuda.cu).

#include "cuda/persistent.cuh"

#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/irange.h>
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace deeprnn {
namespace cuda {
namespace persistent {
namespace {

// The block as the Exec of forward_step: each thread runs its share of a
// phase, __syncthreads between phases, and phase 2 with warp shuffles.
struct DeviceBlock {
  template <typename F>
  __device__ void for_threads(const F& f) {
    f(int64_t{threadIdx.x}, int64_t{blockDim.x});
  }
  __device__ void sync() {
    __syncthreads();
  }
  template <typename scalar_t>
  __device__ void dot(
      const Geometry& geo,
      const Shared<scalar_t>& sh,
      int64_t running) {
    using acc_t = at::opmath_type<scalar_t>;
    const int team_size = static_cast<int>(geo.team);
    const int64_t team = threadIdx.x / team_size;
    const int64_t lane = threadIdx.x % team_size;
    const int64_t teams = blockDim.x / team_size;
    const int64_t outputs = dot_outputs(geo, running);
    // The trip count is the same for every thread, so each shuffle below
    // finds all 32 lanes of its warp.
    for (int64_t base = 0; base < outputs; base += teams) {
      const int64_t o = base + team;
      acc_t sum[kRowGroup] = {};
      if (o < outputs) {
        dot_partial(geo, sh, o, lane, sum);
      }
      for (int offset = team_size / 2; offset > 0; offset /= 2) {
        DEEPRNN_UNROLL
        for (int i = 0; i < kRowGroup; ++i) {
          sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], offset);
        }
      }
      if (o < outputs && lane == 0) {
        dot_store(geo, sh, o, running, sum);
      }
    }
  }
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    persistent_forward_kernel(const ForwardParams<scalar_t> p) {
  extern __shared__ __align__(16) unsigned char shared_memory[];
  const Shared<scalar_t> sh(p.geo, shared_memory);
  const Slice s = slice_of(p, blockIdx.x);
  DeviceBlock block;
  load_weights(p, s, sh, threadIdx.x, blockDim.x);
  __syncthreads();
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int64_t step = 0; step < p.T; ++step) {
    forward_step(p, s, sh, step, block);
    // h_t of every block is in global memory (and visible to all) before
    // any block reads it as h_{t-1}.
    grid.sync();
  }
}

// A kernel's parameters travel in 4 KiB of constant memory.
static_assert(
    sizeof(StackParams<double>) <= 4096,
    "the stack kernel's parameters must fit the launch's 4 KiB");

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    persistent_stack_kernel(const StackParams<scalar_t> p) {
  extern __shared__ __align__(16) unsigned char shared_memory[];
  const Shared<scalar_t> sh(p.layers[0].geo, shared_memory);
  DeviceBlock block;
  load_stack_weights(p, blockIdx.x, sh, threadIdx.x, blockDim.x);
  __syncthreads();
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  const int64_t waves = p.layers[0].T + p.L - 1;
  for (int64_t wave = 0; wave < waves; ++wave) {
    stack_step(p, blockIdx.x, sh, wave, block);
    // Every layer's h_t of this wavefront step is in global memory before
    // the layer above reads it as its input, and the layer itself as its
    // h_{t-1}.
    grid.sync();
  }
}

static_assert(
    sizeof(StackBackwardParams<double>) <= 4096,
    "the stack backward kernel's parameters must fit the launch's 4 KiB");

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    persistent_stack_backward_kernel(const StackBackwardParams<scalar_t> p) {
  extern __shared__ __align__(16) unsigned char shared_memory[];
  const Shared<scalar_t> sh(p.layers[0].geo, shared_memory);
  DeviceBlock block;
  load_stack_backward_weights(p, blockIdx.x, sh, threadIdx.x, blockDim.x);
  __syncthreads();
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  const int64_t waves = p.layers[0].T + p.L - 1;
  for (int64_t wave = 0; wave < waves; ++wave) {
    stack_backward_pointwise(p, blockIdx.x, sh, wave, block);
    // dG of every layer's step is in global memory before any block
    // multiplies it: by W_hh in phase B now, by W_ih for the layer below
    // in the next wavefront step.
    grid.sync();
    stack_backward_product(p, blockIdx.x, sh, wave, block);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    persistent_backward_kernel(const BackwardParams<scalar_t> p) {
  extern __shared__ __align__(16) unsigned char shared_memory[];
  const Shared<scalar_t> sh(p.geo, shared_memory);
  const Slice s = slice_of(p, blockIdx.x);
  DeviceBlock block;
  load_weights_transposed(p, s, sh, threadIdx.x, blockDim.x);
  __syncthreads();
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int64_t step = 0; step < p.T; ++step) {
    backward_step_pointwise(p, s, step, block);
    // dG_t of every block is in global memory before any block multiplies
    // it; phase B and the next phase A touch only the block's own units.
    grid.sync();
    backward_step_product(p, s, sh, step, block);
  }
}

// DEEPRNN_CUDA_FAST_PATH_UNITS=<n>: at least n hidden units per block (a
// tuning knob for GPU sessions: fewer blocks make the grid barrier cheaper
// and each block's share of the work larger); unset or 0: the chooser's own.
int64_t min_units_from_environment() {
  static const int64_t units = [] {
    const char* value = std::getenv("DEEPRNN_CUDA_FAST_PATH_UNITS");
    return value == nullptr ? int64_t{0}
                            : std::max<int64_t>(0, std::atoll(value));
  }();
  return units;
}

// The geometry of a layer (`groups` = its directions) or of a stack (`stack`:
// `groups` = its layers, the stack kernel) on one device, or nullopt if it
// does not fit; cached, since the occupancy queries cost a few microseconds
// each.
template <typename scalar_t>
std::optional<Geometry> geometry_for(
    Pass pass,
    int device,
    int64_t hidden,
    int64_t groups,
    int64_t gates,
    int64_t batch,
    bool stack = false) {
  // The geometry depends on the batch only up to a full tile: keying on
  // that bounds the cache whatever batch sizes come.
  batch = std::min(round_up(batch, kRowGroup), kMaxTileRows);
  using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, bool>;
  static std::mutex mutex;
  static std::map<Key, std::optional<Geometry>> cache;
  const Key key{
      static_cast<int>(pass), device, hidden, groups, gates, batch, stack};
  std::lock_guard<std::mutex> lock(mutex);
  const auto found = cache.find(key);
  if (found != cache.end()) {
    return found->second;
  }
  auto attribute = [device](cudaDeviceAttr which) {
    int value = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, which, device));
    return value;
  };
  std::optional<Geometry> geo;
  if (attribute(cudaDevAttrCooperativeLaunch) != 0) {
    const void* kernel = stack
        ? (pass == Pass::Forward
               ? reinterpret_cast<const void*>(
                     persistent_stack_kernel<scalar_t>)
               : reinterpret_cast<const void*>(
                     persistent_stack_backward_kernel<scalar_t>))
        : pass == Pass::Forward
        ? reinterpret_cast<const void*>(persistent_forward_kernel<scalar_t>)
        : reinterpret_cast<const void*>(persistent_backward_kernel<scalar_t>);
    geo = choose_geometry(
        pass,
        hidden,
        groups,
        gates,
        batch,
        sizeof(scalar_t),
        sizeof(at::opmath_type<scalar_t>),
        attribute(cudaDevAttrMultiProcessorCount),
        attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin),
        [&](int64_t shared_bytes) -> int64_t {
          // Above 48 KiB a kernel must opt in before it may launch (and
          // before the occupancy query counts it).
          C10_CUDA_CHECK(cudaFuncSetAttribute(
              kernel,
              cudaFuncAttributeMaxDynamicSharedMemorySize,
              static_cast<int>(shared_bytes)));
          int blocks = 0;
          C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
              &blocks, kernel, kThreads, static_cast<size_t>(shared_bytes)));
          return blocks;
        },
        min_units_from_environment(),
        stack ? 2 : 1);
  }
  cache.emplace(key, geo);
  return geo;
}

// Launches `kernel(params)` as a cooperative grid of `groups` x `geo` on the
// current stream. Returns false, with a warning (once), when the device
// refuses the grid as too large to be co-resident: the occupancy query
// promised it, but less of the device may be ours (MPS, a partitioned GPU);
// the caller then takes the general path. Any other error throws.
template <typename Params>
bool launch_cooperative(
    void (*kernel)(Params),
    const Params& params,
    int64_t groups,
    const Geometry& geo) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(
      reinterpret_cast<const void*>(kernel),
      cudaFuncAttributeMaxDynamicSharedMemorySize,
      static_cast<int>(geo.shared_bytes)));
  Params args = params;
  void* kernel_args[] = {&args};
  const cudaError_t status = cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(kernel),
      dim3(static_cast<unsigned int>(groups * geo.blocks_per_direction)),
      dim3(static_cast<unsigned int>(geo.threads)),
      kernel_args,
      static_cast<size_t>(geo.shared_bytes),
      c10::cuda::getCurrentCUDAStream());
  if (status == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError(); // clear it: the general path goes on
    TORCH_WARN_ONCE(
        "deeprnn: the device refused a persistent kernel's grid of ",
        groups * geo.blocks_per_direction,
        " blocks as too large to be co-resident; those layers take the "
        "general path");
    return false;
  }
  C10_CUDA_CHECK(status);
  return true;
}

// Layers the fast paths have run in this process: the private operator
// deeprnn::_cuda_fast_path_layers (ops/schemas.cpp) keeps the counts, so
// that tests can tell which path ran.
void count_layers(Pass pass, int64_t layers = 1, bool stacked = false) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("deeprnn::_cuda_fast_path_layers", "")
          .typed<std::vector<int64_t>(int64_t, int64_t, int64_t, int64_t)>();
  const bool forward = pass == Pass::Forward;
  op.call(
      forward ? layers : 0,
      forward ? 0 : layers,
      stacked && forward ? layers : 0,
      stacked && !forward ? layers : 0);
}

// DEEPRNN_CUDA_FAST_PATH_WAVEFRONT=0: stacks run layer by layer even where
// the stack kernel fits (to compare the two); unset or 1: the stack kernel
// where it fits.
bool wavefront_from_environment() {
  static const bool enabled = [] {
    const char* value = std::getenv("DEEPRNN_CUDA_FAST_PATH_WAVEFRONT");
    return value == nullptr || std::string(value) != "0";
  }();
  return enabled;
}

} // namespace
} // namespace persistent

bool fast_path_enabled() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("deeprnn::_cuda_fast_path", "")
                             .typed<int64_t(int64_t)>();
  return op.call(-1) != 0;
}

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
    const LengthsPlan* plan) {
  using namespace persistent;
  if (cfg.has_proj || cfg.batch == 0 || cfg.seq_len == 0 ||
      !y.is_contiguous() || !fast_path_enabled()) {
    return false;
  }
  const std::optional<Geometry> geo = geometry_for<scalar_t>(
      Pass::Forward,
      layer_input.get_device(),
      cfg.hidden_size,
      cfg.num_directions,
      cfg.gates,
      cfg.batch);
  if (!geo.has_value()) {
    return false;
  }
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
      *geo,
      [&](const ForwardParams<scalar_t>& params) {
        return launch_cooperative(
            persistent_forward_kernel<scalar_t>,
            params,
            cfg.num_directions,
            *geo);
      });
  if (ran) {
    count_layers(Pass::Forward);
  }
  return ran;
}

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
    const LengthsPlan* plan) {
  using namespace persistent;
  if (!stack_applies(cfg) || !output.is_contiguous() || !fast_path_enabled() ||
      !wavefront_from_environment()) {
    return false;
  }
  for (const LayerReserve& r : saved) {
    if ((r.output.defined() && !r.output.is_contiguous()) ||
        (r.gates.defined() && !r.gates.is_contiguous()) ||
        (r.cells.defined() && !r.cells.is_contiguous())) {
      return false;
    }
  }
  for (const at::Tensor& mask : masks) {
    if (mask.defined() && !mask.is_contiguous()) {
      return false;
    }
  }
  const std::optional<Geometry> geo = geometry_for<scalar_t>(
      Pass::Forward,
      input.get_device(),
      cfg.hidden_size,
      cfg.num_layers,
      cfg.gates,
      cfg.batch,
      /*stack=*/true);
  if (!geo.has_value()) {
    return false;
  }
  const bool ran = persistent::forward_stack<scalar_t>(
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
      *geo,
      [&](const StackParams<scalar_t>& params) {
        return launch_cooperative(
            persistent_stack_kernel<scalar_t>, params, cfg.num_layers, *geo);
      });
  if (ran) {
    count_layers(Pass::Forward, cfg.num_layers, /*stacked=*/true);
  }
  return ran;
}

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
    const LengthsPlan* plan) {
  using namespace persistent;
  if (!stack_applies(cfg) || !fast_path_enabled() ||
      !wavefront_from_environment()) {
    return false;
  }
  for (const auto l : c10::irange(cfg.num_layers)) {
    const LayerReserve& r = saved[l];
    if ((r.gates.defined() && !r.gates.is_contiguous()) ||
        (r.cells.defined() && !r.cells.is_contiguous()) ||
        (l + 1 < cfg.num_layers &&
         (!r.output.defined() || !r.output.is_contiguous()))) {
      return false;
    }
  }
  const std::optional<Geometry> geo = geometry_for<scalar_t>(
      Pass::Backward,
      output.get_device(),
      cfg.hidden_size,
      cfg.num_layers,
      cfg.gates,
      cfg.batch,
      /*stack=*/true);
  if (!geo.has_value()) {
    return false;
  }
  const bool ran = persistent::backward_stack<scalar_t>(
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
      *geo,
      [&](const StackBackwardParams<scalar_t>& params) {
        return launch_cooperative(
            persistent_stack_backward_kernel<scalar_t>,
            params,
            cfg.num_layers,
            *geo);
      });
  if (ran) {
    count_layers(Pass::Backward, cfg.num_layers, /*stacked=*/true);
  }
  return ran;
}

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
    const LengthsPlan* plan) {
  using namespace persistent;
  const bool lstm = cfg.mode == Mode::LSTM;
  const bool dense = y.is_contiguous() && dy.is_contiguous() &&
      dgates_x.is_contiguous() && dgates_h.is_contiguous() &&
      dh_carry.is_contiguous() && (!lstm || dc_carry.is_contiguous()) &&
      (!saved.gates.defined() || saved.gates.is_contiguous()) &&
      (!saved.cells.defined() || saved.cells.is_contiguous());
  if (cfg.has_proj || cfg.batch == 0 || cfg.seq_len == 0 || !dense ||
      !fast_path_enabled()) {
    return false;
  }
  const std::optional<Geometry> geo = geometry_for<scalar_t>(
      Pass::Backward,
      y.get_device(),
      cfg.hidden_size,
      cfg.num_directions,
      cfg.gates,
      cfg.batch);
  if (!geo.has_value()) {
    return false;
  }
  const bool ran = persistent::backward_loop<scalar_t>(
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
      plan,
      *geo,
      [&](const BackwardParams<scalar_t>& params) {
        return launch_cooperative(
            persistent_backward_kernel<scalar_t>,
            params,
            cfg.num_directions,
            *geo);
      });
  if (ran) {
    count_layers(Pass::Backward);
  }
  return ran;
}

#define DEEPRNN_INSTANTIATE(scalar_t)                   \
  template bool try_persistent_forward_layer<scalar_t>( \
      const RNNConfig&,                                 \
      const std::vector<CellParams>&,                   \
      int64_t,                                          \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const LayerReserve&,                              \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const LengthsPlan*);
#define DEEPRNN_INSTANTIATE_STACK(scalar_t)             \
  template bool try_persistent_forward_stack<scalar_t>( \
      const RNNConfig&,                                 \
      const std::vector<CellParams>&,                   \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const std::vector<LayerReserve>&,                 \
      const std::vector<at::Tensor>&,                   \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const LengthsPlan*);
#define DEEPRNN_INSTANTIATE_STACK_BACKWARD(scalar_t)     \
  template bool try_persistent_backward_stack<scalar_t>( \
      const RNNConfig&,                                  \
      const std::vector<CellParams>&,                    \
      const at::Tensor&,                                 \
      const at::Tensor&,                                 \
      const at::Tensor&,                                 \
      const at::Tensor&,                                 \
      const std::vector<LayerReserve>&,                  \
      const at::Tensor&,                                 \
      const at::Tensor&,                                 \
      const at::Tensor&,                                 \
      bool,                                              \
      bool,                                              \
      at::Tensor&,                                       \
      const at::Tensor&,                                 \
      const at::Tensor&,                                 \
      std::vector<at::Tensor>&,                          \
      const LengthsPlan*);
DEEPRNN_INSTANTIATE_STACK_BACKWARD(float)
DEEPRNN_INSTANTIATE_STACK_BACKWARD(double)
DEEPRNN_INSTANTIATE_STACK_BACKWARD(at::Half)
DEEPRNN_INSTANTIATE_STACK_BACKWARD(at::BFloat16)
#undef DEEPRNN_INSTANTIATE_STACK_BACKWARD
DEEPRNN_INSTANTIATE_STACK(float)
DEEPRNN_INSTANTIATE_STACK(double)
DEEPRNN_INSTANTIATE_STACK(at::Half)
DEEPRNN_INSTANTIATE_STACK(at::BFloat16)
#undef DEEPRNN_INSTANTIATE_STACK
#define DEEPRNN_INSTANTIATE_BACKWARD(scalar_t)          \
  template bool try_persistent_backward_loop<scalar_t>( \
      const RNNConfig&,                                 \
      const std::vector<CellParams>&,                   \
      int64_t,                                          \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const LayerReserve&,                              \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const at::Tensor&,                                \
      const LengthsPlan*);
DEEPRNN_INSTANTIATE_BACKWARD(float)
DEEPRNN_INSTANTIATE_BACKWARD(double)
DEEPRNN_INSTANTIATE_BACKWARD(at::Half)
DEEPRNN_INSTANTIATE_BACKWARD(at::BFloat16)
#undef DEEPRNN_INSTANTIATE_BACKWARD
DEEPRNN_INSTANTIATE(float)
DEEPRNN_INSTANTIATE(double)
DEEPRNN_INSTANTIATE(at::Half)
DEEPRNN_INSTANTIATE(at::BFloat16)
#undef DEEPRNN_INSTANTIATE

} // namespace cuda
} // namespace deeprnn
