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

// GCC's __builtin_shuffle; other compilers pack one float at a time.
#if defined(__GNUC__) && !defined(__clang__)
#define DEEPRNN_TRANSPOSE_IN_REGISTERS 1
#else
#define DEEPRNN_TRANSPOSE_IN_REGISTERS 0
#endif

#if DEEPRNN_TRANSPOSE_IN_REGISTERS
// Eight floats: one AVX2 register (half an AVX-512 one, two SSE ones).
typedef float Vec8 __attribute__((vector_size(32)));
typedef int32_t Mask8 __attribute__((vector_size(32)));

// Transposes the 8 x 8 block r in place (r[i][j] <- r[j][i]): three rounds
// of two-input shuffles, which GCC turns into unpack, shuffle and
// lane-permute instructions.
DEEPRNN_INLINE void transpose8(Vec8 (&r)[8]) {
  Vec8 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], Mask8{0, 8, 1, 9, 4, 12, 5, 13});
    t[i + 1] =
        __builtin_shuffle(r[i], r[i + 1], Mask8{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4) {
    for (int h = 0; h < 2; ++h) {
      r[i + h] = __builtin_shuffle(
          t[i + h], t[i + h + 2], Mask8{0, 1, 8, 9, 4, 5, 12, 13});
      r[i + h + 2] = __builtin_shuffle(
          t[i + h], t[i + h + 2], Mask8{2, 3, 10, 11, 6, 7, 14, 15});
    }
  }
  // r now holds, per half of rows (i < 4, i >= 4), columns 0/4, 1/5, 2/6,
  // 3/7 in the order r0 = (0, 4), r2 = (1, 5), r1 = (2, 6), r3 = (3, 7).
  const int order[4] = {0, 2, 1, 3};
  for (int j = 0; j < 4; ++j) {
    t[j] = __builtin_shuffle(
        r[order[j]], r[order[j] + 4], Mask8{0, 1, 2, 3, 8, 9, 10, 11});
    t[j + 4] = __builtin_shuffle(
        r[order[j]], r[order[j] + 4], Mask8{4, 5, 6, 7, 12, 13, 14, 15});
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = t[i];
  }
}
#endif

// pack_panel's layout (see small_gemm.h). Three cases:
// - W's columns are contiguous in k (stride_c == 1: backward packs W_hh's
//   columns): each k is one contiguous copy;
// - W's rows are contiguous in k (stride_k == 1: W_hh, W_ih and W_hr in
//   forward): 8 x 8 blocks transposed in registers, each row of W read 32
//   bytes at a time, not a float per column;
// - otherwise, and for the edges, one float at a time.
// The element loop it replaced ran at about 9 GB/s, packing included a
// tenth of the small-batch row's inference (B = 1, T = 200).
DEEPRNN_FLOAT_CLONES void pack_panel_float(
    int64_t cols,
    int64_t depth,
    const float* w,
    int64_t stride_c,
    int64_t stride_k,
    float* panel) {
  for (int64_t c0 = 0; c0 < cols; c0 += kBlockColumns) {
    const int64_t width = std::min(kBlockColumns, cols - c0);
    float* block = panel + c0 * depth;
    const float* source = w + c0 * stride_c;
    if (stride_c == 1) {
      for (int64_t k = 0; k < depth; ++k) {
        std::memcpy(
            block + k * width, source + k * stride_k, width * sizeof(float));
      }
      continue;
    }
    int64_t k_done = 0, c_done = 0;
#if DEEPRNN_TRANSPOSE_IN_REGISTERS
    if (stride_k == 1) {
      k_done = depth / 8 * 8;
      c_done = width / 8 * 8;
      for (int64_t c = 0; c < c_done; c += 8) {
        for (int64_t k = 0; k < k_done; k += 8) {
          Vec8 r[8];
          for (int i = 0; i < 8; ++i) {
            std::memcpy(&r[i], source + (c + i) * stride_c + k, sizeof r[i]);
          }
          transpose8(r);
          for (int i = 0; i < 8; ++i) {
            std::memcpy(block + (k + i) * width + c, &r[i], sizeof r[i]);
          }
        }
      }
    }
#endif
    // The edges: depth past k_done for the transposed columns, and every
    // column past c_done.
    for (int64_t k = 0; k < depth; ++k) {
      for (int64_t c = k < k_done ? c_done : 0; c < width; ++c) {
        block[k * width + c] = source[c * stride_c + k * stride_k];
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
  pack_panel_float(cols, depth, w, stride_c, stride_k, panel);
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
