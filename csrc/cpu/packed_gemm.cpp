#include "cpu/packed_gemm.h"

#include "cpu/buffer_cache.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <limits>

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
    const char* disabled = std::getenv("DEEPRNN_DISABLE_PACKED_GEMM");
    if (disabled != nullptr && std::strcmp(disabled, "0") != 0 &&
        disabled[0] != '\0') {
      return found;
    }
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

} // namespace

bool PackedWeight::available() {
  return api().ok;
}

PackedWeight::PackedWeight(const at::Tensor& weight, int64_t m, bool transpose)
    : m_(m) {
  TORCH_INTERNAL_ASSERT(available() && weight.is_contiguous());
  TORCH_INTERNAL_ASSERT(weight.scalar_type() == at::kFloat);
  n_ = transpose ? weight.size(0) : weight.size(1);
  k_ = transpose ? weight.size(1) : weight.size(0);
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

TORCH_LIBRARY_IMPL(deeprnn, CompositeImplicitAutograd, m) {
  m.impl("_cpu_packed_gemm", [] { return PackedWeight::available(); });
}

} // namespace cpu
} // namespace deeprnn
