#include "cpu/packed_gemm.h"

#include "cpu/buffer_cache.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cpuid.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>

namespace deeprnn {
namespace cpu {
namespace {

// CBLAS constants and the LP64 signatures of MKL's packed GEMM
// (mkl_cblas.h); MKL_INT is int in the LP64 interface torch links.
constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;
constexpr int kPacked = 151;
constexpr int kBMatrix = 162;

using PackGetSize = size_t (*)(int identifier, int m, int n, int k);
using Pack = void (*)(
    int layout,
    int identifier,
    int trans,
    int m,
    int n,
    int k,
    float alpha,
    const float* src,
    int ld,
    float* dest);
using Compute = void (*)(
    int layout,
    int transa,
    int transb,
    int m,
    int n,
    int k,
    const float* a,
    int lda,
    const float* b,
    int ldb,
    float beta,
    float* c,
    int ldc);

struct MklPackedApi {
  PackGetSize get_size = nullptr;
  Pack pack = nullptr;
  Compute compute = nullptr;
  bool ok = false;
};

const MklPackedApi& api() {
  static const MklPackedApi loaded = [] {
    MklPackedApi found;
    // libtorch_cpu is already loaded (we link it); NOLOAD only finds it,
    // whether it was loaded globally or, as from Python, locally.
    void* torch_cpu = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    if (torch_cpu == nullptr) {
      return found;
    }
    found.get_size = reinterpret_cast<PackGetSize>(
        dlsym(torch_cpu, "cblas_sgemm_pack_get_size"));
    found.pack = reinterpret_cast<Pack>(dlsym(torch_cpu, "cblas_sgemm_pack"));
    found.compute =
        reinterpret_cast<Compute>(dlsym(torch_cpu, "cblas_sgemm_compute"));
    found.ok = found.get_size != nullptr && found.pack != nullptr &&
        found.compute != nullptr;
    return found;
  }();
  return loaded;
}

int as_int(int64_t value) {
  TORCH_INTERNAL_ASSERT(
      value >= 0 && value <= std::numeric_limits<int>::max(),
      "deeprnn: packed GEMM dimension out of range: ",
      value);
  return static_cast<int>(value);
}

// oneDNN's inner-product primitive, reached through the operators torch
// registers for Inductor's CPU linear (x86 builds with MKLDNN):
//   mkldnn::_reorder_linear_weight(W [n, k], batch_size) -> W in oneDNN's
//     blocked layout for that many rows;
//   mkldnn::_linear_pointwise(X [m, k], W, None, "none", [], None) -> X W^T.
// (oneDNN's C API is not exported by libtorch_cpu, these operators are.)
struct OneDnnOps {
  std::optional<c10::OperatorHandle> reorder;
  std::optional<c10::OperatorHandle> linear;
  bool ok = false;
  // aten::mkldnn_linear_backward_weights has a kernel (for MKLDNN tensors).
  bool backward_weights = false;
};

const OneDnnOps& onednn_ops() {
  static const OneDnnOps found = [] {
    OneDnnOps ops;
    auto& dispatcher = c10::Dispatcher::singleton();
    ops.reorder = dispatcher.findSchema({"mkldnn::_reorder_linear_weight", ""});
    ops.linear = dispatcher.findSchema({"mkldnn::_linear_pointwise", ""});
    // The schemas the boxed calls below fill in (as in torch 2.x); another
    // torch's operators of these names are left alone.
    ops.ok = ops.reorder.has_value() && ops.linear.has_value() &&
        ops.reorder->schema().arguments().size() == 2 &&
        ops.linear->schema().arguments().size() == 6 &&
        ops.reorder->hasKernelForDispatchKey(c10::DispatchKey::CPU) &&
        ops.linear->hasKernelForDispatchKey(c10::DispatchKey::CPU);
    const auto backward =
        dispatcher.findSchema({"aten::mkldnn_linear_backward_weights", ""});
    ops.backward_weights = backward.has_value() &&
        backward->hasKernelForDispatchKey(c10::DispatchKey::MkldnnCPU);
    return ops;
  }();
  return found;
}

bool genuine_intel() {
  unsigned int level = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &level, &ebx, &ecx, &edx) == 0) {
    return false;
  }
  char vendor[13];
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  vendor[12] = '\0';
  return std::strcmp(vendor, "GenuineIntel") == 0;
}

// input @ weight^T through mkldnn::_linear_pointwise; weight [n, k], dense or
// reordered by mkldnn::_reorder_linear_weight. Returns a new [m, n] tensor.
at::Tensor onednn_linear(const at::Tensor& input, const at::Tensor& weight) {
  c10::Stack stack{
      input,
      weight,
      c10::IValue(), // no bias
      c10::IValue(std::string("none")), // no fused activation
      c10::IValue(c10::List<std::optional<at::Scalar>>()),
      c10::IValue()};
  onednn_ops().linear->callBoxed(stack);
  return std::move(stack[0]).toTensor();
}

// weight [n, k], contiguous, in oneDNN's blocked layout for products of up
// to `rows` rows (mkldnn::_reorder_linear_weight).
at::Tensor onednn_reorder(const at::Tensor& weight, int64_t rows) {
  c10::Stack stack{weight, std::optional<int64_t>(rows)};
  onednn_ops().reorder->callBoxed(stack);
  return std::move(stack[0]).toTensor();
}

// target = product (beta 0: whatever target held, NaN included, is not
// read) or product + beta * target.
void store_product(at::Tensor& target, const at::Tensor& product, float beta) {
  if (beta == 0.0f) {
    target.copy_(product);
  } else if (beta == 1.0f) {
    target.add_(product);
  } else {
    target.mul_(beta).add_(product);
  }
}

// The library behind PackedWeight, chosen once per process:
// DEEPRNN_DISABLE_PACKED_GEMM=1 -> none; DEEPRNN_CPU_GEMM=mkl or onednn ->
// that one where torch carries it (else none); unset or auto -> MKL on
// Intel CPUs, oneDNN on the others (MKL runs its AVX2 kernels there: on an
// AMD EPYC with AVX-512, 64 x 512 x 1536 took 820 us in MKL's packed GEMM
// and 267 us in oneDNN's with a reordered weight), each falling back to the
// other where torch lacks it.
PackedWeight::Library choose_library() {
  using Library = PackedWeight::Library;
  const char* disabled = std::getenv("DEEPRNN_DISABLE_PACKED_GEMM");
  if (disabled != nullptr && std::strcmp(disabled, "0") != 0 &&
      disabled[0] != '\0') {
    return Library::kNone;
  }
  const bool mkl = api().ok;
  const bool onednn = onednn_ops().ok;
  const char* asked = std::getenv("DEEPRNN_CPU_GEMM");
  const std::string choice = asked == nullptr ? "auto" : asked;
  if (choice == "mkl") {
    return mkl ? Library::kMkl : Library::kNone;
  }
  if (choice == "onednn") {
    return onednn ? Library::kOneDnn : Library::kNone;
  }
  if (!choice.empty() && choice != "auto") {
    TORCH_WARN(
        "deeprnn: DEEPRNN_CPU_GEMM must be auto, mkl or onednn, got '",
        choice,
        "'; using auto");
  }
  if (mkl && (genuine_intel() || !onednn)) {
    return Library::kMkl;
  }
  return onednn ? Library::kOneDnn : Library::kNone;
}

} // namespace

PackedWeight::Library PackedWeight::library() {
  static const Library chosen = choose_library();
  return chosen;
}

bool PackedWeight::available() {
  return library() != Library::kNone;
}

PackedWeight::PackedWeight(const at::Tensor& weight, int64_t m, bool transpose)
    : m_(m) {
  TORCH_INTERNAL_ASSERT(available() && weight.is_contiguous());
  TORCH_INTERNAL_ASSERT(weight.scalar_type() == at::kFloat);
  n_ = transpose ? weight.size(0) : weight.size(1);
  k_ = transpose ? weight.size(1) : weight.size(0);
  if (library() == Library::kOneDnn) {
    // oneDNN multiplies by W^T of W [n, k]: the backward's op(W) = W [k, n]
    // is transposed once here.
    storage_ = onednn_reorder(transpose ? weight : weight.t().contiguous(), m_);
    return;
  }
  const size_t bytes =
      api().get_size(kBMatrix, as_int(m_), as_int(n_), as_int(k_));
  // From the buffer cache: every call packs its layers' weights afresh.
  storage_ = cached_empty(
      {static_cast<int64_t>(bytes / sizeof(float)) + 1}, weight.options());
  api().pack(
      kRowMajor,
      kBMatrix,
      transpose ? kTrans : kNoTrans,
      as_int(m_),
      as_int(n_),
      as_int(k_),
      1.0f,
      weight.data_ptr<float>(),
      as_int(transpose ? k_ : n_),
      storage_.data_ptr<float>());
}

void PackedWeight::multiply(
    int64_t rows,
    const float* a,
    int64_t lda,
    float* c,
    int64_t ldc,
    float beta) const {
  TORCH_INTERNAL_ASSERT(rows >= 1 && rows <= m_);
  if (library() == Library::kOneDnn) {
    // Below autograd: the operands are plain buffers.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto options = at::TensorOptions().dtype(at::kFloat);
    const at::Tensor input =
        at::from_blob(const_cast<float*>(a), {rows, k_}, {lda, 1}, options);
    at::Tensor target = at::from_blob(c, {rows, n_}, {ldc, 1}, options);
    store_product(target, onednn_linear(input, storage_), beta);
    return;
  }
  api().compute(
      kRowMajor,
      kNoTrans,
      kPacked,
      as_int(rows),
      as_int(n_),
      as_int(k_),
      a,
      as_int(lda),
      storage_.data_ptr<float>(),
      as_int(n_),
      beta,
      c,
      as_int(ldc));
}

namespace {

// Below this many multiply-adds the operator call's overhead (~10 us)
// outweighs oneDNN's faster kernel (16 x 128 x 512: 43 us against MKL's 32;
// 32 x 256 x 1024: 118 against 188); below this many columns or inner
// products the vector kernels have little to gain.
constexpr int64_t kMinOneDnnMacs = int64_t{4} << 20;
constexpr int64_t kMinOneDnnColumns = 32;
// The product comes back in a new tensor, copied (or added) into out: rows
// are taken a few at a time so that it stays small and in cache (the
// `fastrnns` LSTM input projection, 6400 x 512 x 2048: 52 ms whole, 34 in
// 2 MiB chunks, 39 in 4 MiB ones).
constexpr int64_t kOneDnnChunkBytes = int64_t{2} << 20;
constexpr int64_t kMinOneDnnChunkRows = 64;
// A weight gradient, out [m, n] = G^T X for G [K, m] and X [K, n] with K =
// steps x batch, goes through oneDNN's inner-product backward-weights
// primitive instead, on MKLDNN copies of about this many bytes of rows of
// G and X at a time. On the AMD EPYC VM, K = 6400, m = 2048, n = 512
// (`fastrnns` LSTM): MKL 77.6 ms, oneDNN's inner product 60, this primitive
// in 512, 1024, 2048 and 3200-row blocks (5 to 31 MiB) 52.2, 48.6, 51.5 and
// 50.8 ms; m = 1536 (GRU): 56.1 against 34.7-38.1; whole, the copies
// page-fault (to_mkldnn of a 52 MB dG: 25 ms). The copies (and oneDNN's
// scratchpad) are workspace beyond the documented layouts, so the blocks
// are kept small: 4 MiB put backward 3-10 MB above them at T = 100,000
// (tests/python/test_long_sequence.py), 12 MiB 22-29 MB.
constexpr int64_t kOneDnnWeightGradientChunkBytes = int64_t{4} << 20;

// out = a @ b (+ out) for a = G^T, G [K, m] (a transposed view) by blocks of
// K: see kOneDnnWeightGradientChunkBytes.
void onednn_weight_gradient_out(
    at::Tensor& out,
    const at::Tensor& a,
    const at::Tensor& b,
    bool accumulate) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  const at::Tensor gradient = a.t(); // [K, m]
  const at::Tensor weight_shape =
      at::empty({m, n}, b.options().layout(at::kMkldnn));
  const int64_t chunk_rows = std::max(
      kMinOneDnnChunkRows,
      kOneDnnWeightGradientChunkBytes /
          ((m + n) * static_cast<int64_t>(sizeof(float))));
  for (int64_t start = 0; start < k; start += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, k - start);
    const at::Tensor partial = std::get<0>(at::mkldnn_linear_backward_weights(
        gradient.narrow(0, start, rows).contiguous().to_mkldnn(),
        b.narrow(0, start, rows).contiguous().to_mkldnn(),
        weight_shape,
        false)); // [m, n], dense
    store_product(out, partial, accumulate || start > 0 ? 1.0f : 0.0f);
  }
}

} // namespace

bool onednn_matmul_out(
    at::Tensor& out,
    const at::Tensor& a,
    const at::Tensor& b,
    bool accumulate) {
  if (PackedWeight::library() != PackedWeight::Library::kOneDnn ||
      a.scalar_type() != at::kFloat || !a.device().is_cpu() ||
      !b.device().is_cpu() || !out.device().is_cpu() ||
      b.scalar_type() != at::kFloat || out.scalar_type() != at::kFloat ||
      a.dim() != 2 || b.dim() != 2 || out.dim() != 2) {
    return false;
  }
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (k < kMinOneDnnColumns || n < kMinOneDnnColumns ||
      m * k * n < kMinOneDnnMacs) {
    return false;
  }
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (a.stride(0) == 1 && a.stride(1) >= m && m > 1 &&
      onednn_ops().backward_weights) {
    onednn_weight_gradient_out(out, a, b, accumulate);
    return true;
  }
  const int64_t chunk_rows = std::max(
      kMinOneDnnChunkRows,
      kOneDnnChunkBytes / (n * static_cast<int64_t>(sizeof(float))));
  // oneDNN multiplies by W^T of W [n, k]. Given dense, it reorders W on
  // every call: for several blocks W is reordered once for all of them; one
  // block takes it as it is (the separate reorder and its copy cost more
  // there: `small-batch` LSTM training, whose GEMMs are single blocks, 7.5-8.6
  // ms with the weight as it is against 9.3-9.8 reordered first).
  const at::Tensor weight =
      m > chunk_rows ? onednn_reorder(b.t().contiguous(), chunk_rows) : b.t();
  for (int64_t start = 0; start < m; start += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, m - start);
    at::Tensor target = out.narrow(0, start, rows);
    store_product(
        target,
        onednn_linear(a.narrow(0, start, rows), weight),
        accumulate ? 1.0f : 0.0f);
  }
  return true;
}

TORCH_LIBRARY_IMPL(deeprnn, CompositeImplicitAutograd, m) {
  m.impl("_cpu_packed_gemm", [] { return PackedWeight::available(); });
  m.impl("_cpu_packed_gemm_library", [] {
    switch (PackedWeight::library()) {
      case PackedWeight::Library::kMkl:
        return std::string("mkl");
      case PackedWeight::Library::kOneDnn:
        return std::string("onednn");
      case PackedWeight::Library::kNone:
        break;
    }
    return std::string("none");
  });
}

} // namespace cpu
} // namespace deeprnn
