#pragma once

// The recurrent GEMM of every step multiplies by the same weight matrix, but
// a plain BLAS call re-packs that matrix into its internal blocked layout on
// every call (a tenth to a third of the step for the sizes of RNNs). When
// torch's CPU library carries MKL (x86 wheels do), MKL's packed-GEMM API
// lets us pack W_hh once per layer and reuse it for all T steps; where it
// carries oneDNN (x86 wheels do), oneDNN's inner product with a weight
// reordered once does the same. MKL serves Intel CPUs; on others it runs
// AVX2 kernels where oneDNN runs AVX-512 ones, so oneDNN serves them
// (DEEPRNN_CPU_GEMM=mkl|onednn|auto overrides; see the .cpp).
//
// Both are looked up at run time in libtorch_cpu: where neither is there (an
// OpenBLAS or ARM build of torch), or with the environment variable
// DEEPRNN_DISABLE_PACKED_GEMM=1, `available()` is false and the callers use
// at::cpu::mm_out instead. Float32 only.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace deeprnn {
namespace cpu {

class PackedWeight {
 public:
  enum class Library { kNone, kMkl, kOneDnn };

  // Which library packs and multiplies in this process (see the .cpp for
  // the choice and DEEPRNN_CPU_GEMM); fixed at the first call.
  static Library library();

  // Whether a packed GEMM can be used in this process.
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
  // MKL's packed layout (opaque bytes) or oneDNN's reordered weight (an
  // MKLDNN-layout tensor).
  at::Tensor storage_;
  int64_t m_, n_, k_;
};

// out = a @ b (accumulate: out += a @ b) through oneDNN when PackedWeight's
// library is oneDNN, the operands are float32 CPU matrices (any strides) and
// the product has at least kMinOneDnnMacs multiply-adds; returns false (and
// does nothing) otherwise, for the caller's at::mm_out. An `a` that is a
// transposed view (a = G^T, the weight gradients' dG^T X over T x B rows)
// takes oneDNN's backward-weights primitive, the rest its inner product.
// On the AMD EPYC VM: the input projection of `fastrnns` (6400 x 512 x
// 1536) 40 ms against MKL's 70, dx of its backward 26 against 56, its
// GRU's dW_ih 35 against 56 (see the .cpp for the blocking).
bool onednn_matmul_out(
    at::Tensor& out,
    const at::Tensor& a,
    const at::Tensor& b,
    bool accumulate);

} // namespace cpu
} // namespace deeprnn
