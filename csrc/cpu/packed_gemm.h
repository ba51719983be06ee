#pragma once

// The recurrent GEMM of every step multiplies by the same weight matrix, but
// a plain BLAS call re-packs that matrix into its internal blocked layout on
// every call (a tenth to a third of the step for the sizes of RNNs). When
// torch's CPU library carries MKL (x86 wheels do), MKL's packed-GEMM API
// lets us pack W_hh once per layer and reuse it for all T steps.
//
// The API is looked up at run time in libtorch_cpu: where it is absent (an
// OpenBLAS or ARM build of torch), or disabled with the environment variable
// DEEPRNN_DISABLE_PACKED_GEMM=1, `available()` is false and the callers use
// at::cpu::mm_out instead. Float32 only.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace deeprnn {
namespace cpu {

class PackedWeight {
 public:
  // Whether MKL's packed GEMM can be used in this process.
  static bool available();

  // Packs the right-hand operand of C[m, n] = A[m, k] @ op(W), where
  // W is a contiguous float matrix: op(W) = W^T for W [n, k] when
  // `transpose`, else W itself for W [k, n].
  PackedWeight(const at::Tensor& weight, int64_t m, bool transpose);

  // c[rows, n] = a[rows, k] @ op(W) + beta * c for rows <= m (the packed
  // layout of W depends on n and k only; variable lengths shrink the batch
  // step by step); rows of a and c at lda and ldc.
  void multiply(
      int64_t rows,
      const float* a,
      int64_t lda,
      float* c,
      int64_t ldc,
      float beta) const;

 private:
  at::Tensor storage_; // MKL's packed layout, opaque bytes
  int64_t m_, n_, k_;
};

} // namespace cpu
} // namespace deeprnn
