#pragma once

// The matrix products of the fused small-batch step (see rnn_cpu.cpp):
// out[b, c] = sum_k a[b, k] * W[c, k] for a few batch rows b, with W a
// thread's slice of W_hh (or of W_ih, W_hr, or their transposes in backward)
// packed once per layer call into a panel that the thread keeps in its own
// L2 cache. At small batches a BLAS call costs more in overhead
// (argument checks, packing, its own threading) than the arithmetic; this
// kernel is a plain register-tiled loop, compiled for AVX-512, AVX2 and
// baseline x86-64 and picked at load time. Float32 only.

#include <cstdint>

namespace deeprnn {
namespace cpu {

// Packs W[c, k] = w[c * stride_c + k * stride_k] (c < cols, k < depth) into
// `panel` (cols * depth floats, no padding): blocks of 64 columns, each block
// [depth, width] row-major, so that the kernel streams it contiguously.
void pack_panel(
    int64_t cols,
    int64_t depth,
    const float* w,
    int64_t stride_c,
    int64_t stride_k,
    float* panel);

// out[b, c] (+)= sum_k a[b * lda + k] * W[c, k] for b < rows, c < cols, with
// W packed by pack_panel; out rows at ldo. Adds to out when `accumulate`.
void panel_gemm(
    int64_t rows,
    int64_t cols,
    int64_t depth,
    const float* a,
    int64_t lda,
    const float* panel,
    float* out,
    int64_t ldo,
    bool accumulate);

} // namespace cpu
} // namespace deeprnn
