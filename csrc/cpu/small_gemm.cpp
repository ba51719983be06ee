#include "cpu/small_gemm.h"

#include "cpu/target_clones.h"

#include <algorithm>
#include <cstring>

namespace deeprnn {
namespace cpu {
namespace {

// 16 floats: one AVX-512 register (two AVX2 ones, four SSE ones).
typedef float Vec16 __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;
// Columns per panel block and the most vectors of a tile's row.
constexpr int64_t kBlockColumns = 64;
constexpr int kBlockVectors = kBlockColumns / kLanes;
// Batch rows per tile: 4 rows x 4 vectors = 16 accumulators, plus the 4
// weight vectors of a k, fit AVX-512's 32 registers.
constexpr int kTileRows = 4;
// Depth per pass over the batch rows: a block's [128, 64] floats (32 KiB)
// stay in the L1 cache while every row tile reads them.
constexpr int64_t kDepthBlock = 128;

// By reference: a 64-byte vector passed by value changes the calling
// convention between the clones' instruction sets (GCC's -Wpsabi).
DEEPRNN_INLINE void load(Vec16& v, const float* p) {
  std::memcpy(&v, p, sizeof v);
}

DEEPRNN_INLINE void store(float* p, const Vec16& v) {
  std::memcpy(p, &v, sizeof v);
}

// out[i, 0:16*NV] (+)= sum_k a[i, k] * w[k, 0:16*NV] for i < MB: the
// accumulators stay in registers for the whole depth.
template <int MB, int NV>
DEEPRNN_INLINE void tile(
    int64_t depth,
    const float* a,
    int64_t lda,
    const float* w,
    int64_t ldw,
    float* out,
    int64_t ldo,
    bool accumulate) {
  Vec16 acc[MB][NV];
  for (int i = 0; i < MB; ++i) {
    for (int v = 0; v < NV; ++v) {
      acc[i][v] = Vec16{};
    }
  }
  for (int64_t k = 0; k < depth; ++k) {
    Vec16 wk[NV];
    for (int v = 0; v < NV; ++v) {
      load(wk[v], w + k * ldw + v * kLanes);
    }
    for (int i = 0; i < MB; ++i) {
      const float ai = a[i * lda + k];
      for (int v = 0; v < NV; ++v) {
        acc[i][v] += ai * wk[v];
      }
    }
  }
  for (int i = 0; i < MB; ++i) {
    for (int v = 0; v < NV; ++v) {
      float* o = out + i * ldo + v * kLanes;
      if (accumulate) {
        Vec16 previous;
        load(previous, o);
        acc[i][v] += previous;
      }
      store(o, acc[i][v]);
    }
  }
}

template <int NV>
DEEPRNN_INLINE void tile_rows(
    int64_t rows,
    int64_t depth,
    const float* a,
    int64_t lda,
    const float* w,
    int64_t ldw,
    float* out,
    int64_t ldo,
    bool accumulate) {
  switch (rows) {
    case 1:
      tile<1, NV>(depth, a, lda, w, ldw, out, ldo, accumulate);
      break;
    case 2:
      tile<2, NV>(depth, a, lda, w, ldw, out, ldo, accumulate);
      break;
    case 3:
      tile<3, NV>(depth, a, lda, w, ldw, out, ldo, accumulate);
      break;
    default:
      tile<4, NV>(depth, a, lda, w, ldw, out, ldo, accumulate);
      break;
  }
}

DEEPRNN_FLOAT_CLONES void panel_gemm_float(
    int64_t rows,
    int64_t cols,
    int64_t depth,
    const float* a,
    int64_t lda,
    const float* panel,
    float* out,
    int64_t ldo,
    bool accumulate) {
  for (int64_t c0 = 0; c0 < cols; c0 += kBlockColumns) {
    const int64_t width = std::min(kBlockColumns, cols - c0);
    const int64_t vectors = width / kLanes;
    for (int64_t k0 = 0; k0 < depth; k0 += kDepthBlock) {
      const int64_t kd = std::min(kDepthBlock, depth - k0);
      const float* w = panel + c0 * depth + k0 * width; // [kd, width]
      const bool add = accumulate || k0 > 0;
      for (int64_t b0 = 0; b0 < rows; b0 += kTileRows) {
        const int64_t mb = std::min<int64_t>(kTileRows, rows - b0);
        const float* ab = a + b0 * lda + k0;
        float* ob = out + b0 * ldo + c0;
        switch (vectors) {
          case 1:
            tile_rows<1>(mb, kd, ab, lda, w, width, ob, ldo, add);
            break;
          case 2:
            tile_rows<2>(mb, kd, ab, lda, w, width, ob, ldo, add);
            break;
          case 3:
            tile_rows<3>(mb, kd, ab, lda, w, width, ob, ldo, add);
            break;
          case kBlockVectors:
            tile_rows<kBlockVectors>(mb, kd, ab, lda, w, width, ob, ldo, add);
            break;
          default:
            break;
        }
        // The last block's columns past a multiple of 16, one at a time.
        for (int64_t i = 0; i < mb; ++i) {
          for (int64_t c = vectors * kLanes; c < width; ++c) {
            float sum = 0.0f;
            for (int64_t k = 0; k < kd; ++k) {
              sum += ab[i * lda + k] * w[k * width + c];
            }
            ob[i * ldo + c] = add ? ob[i * ldo + c] + sum : sum;
          }
        }
      }
    }
  }
}

} // namespace

void pack_panel(
    int64_t cols,
    int64_t depth,
    const float* w,
    int64_t stride_c,
    int64_t stride_k,
    float* panel) {
  for (int64_t c0 = 0; c0 < cols; c0 += kBlockColumns) {
    const int64_t width = std::min(kBlockColumns, cols - c0);
    float* block = panel + c0 * depth;
    for (int64_t k = 0; k < depth; ++k) {
      for (int64_t c = 0; c < width; ++c) {
        block[k * width + c] = w[(c0 + c) * stride_c + k * stride_k];
      }
    }
  }
}

void panel_gemm(
    int64_t rows,
    int64_t cols,
    int64_t depth,
    const float* a,
    int64_t lda,
    const float* panel,
    float* out,
    int64_t ldo,
    bool accumulate) {
  panel_gemm_float(rows, cols, depth, a, lda, panel, out, ldo, accumulate);
}

} // namespace cpu
} // namespace deeprnn
