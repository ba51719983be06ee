#pragma once

// Vectorisable float activations for the CPU cell kernels.
//
// libm's expf/tanhf are calls the compiler cannot vectorise, and they were
// the largest term of a CPU LSTM step. These are branch-free polynomial
// versions (Cephes-style range reduction) that GCC and Clang turn into SIMD
// code inside the cell loops: the sigmoid within 3 ulps of libm, tanh within
// 4, with exact saturation (tests/cpp/test_fast_math.cpp checks both over
// ~23 million arguments). Double keeps libm: its tests ask for 1e-10 and its
// speed matters less.

#include "common/cell_math.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace deeprnn {
namespace cpu {

// Every branch below is a select the compiler turns into a compare and a
// blend, two vector instructions each: the activations clamp their argument
// once and the helpers they call do not clamp again.

// e^r - 1 for |r| <= ln(2)/2 (Cephes' polynomial, ~1 ulp), with no
// cancellation near zero.
inline float expm1_reduced(float r) {
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * r2 + r;
}

// x = n ln(2) + r with n integral and |r| <= ln(2)/2; `n` gets n. The
// reduction is exact to float rounding (ln(2) in two parts).
inline float reduce_ln2(float x, float& n) {
  n = std::floor(x * 1.44269504088896341f + 0.5f);
  return x - n * 0.693359375f + n * 2.12194440e-4f;
}

// 2^n for an integral n in [-126, 127]. Adding 1.5 * 2^23 puts n in the low
// bits of the sum's representation; the exponent is built from those in
// unsigned arithmetic, well defined for every input: a NaN n (from a NaN
// argument) gives some float, and the caller's product with NaN stays NaN.
// (A float-to-int conversion of NaN, and a left shift of the negative
// result, are undefined behaviour; UBSan flagged the shift.)
inline float exp2_integer(float n) {
  const float shifted = n + 12582912.0f;
  uint32_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  bits = (bits - 0x4B400000u + 127u) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return scale;
}

// e^x for x in [-87.3, 88.3] (the caller clamps: 2^n stays a normal float).
// NaN passes through unchanged.
inline float exp_unclamped(float x) {
  float n;
  const float r = reduce_ln2(x, n);
  return (expm1_reduced(r) + 1.0f) * exp2_integer(n);
}

// e^x - 1 for x in [0, 88.3]: 2^n (e^r - 1) + (2^n - 1) adds two numbers of
// the same sign, so it keeps its relative accuracy as x goes to zero, where
// e^x - 1 itself would cancel.
inline float expm1_nonnegative(float x) {
  float n;
  const float r = reduce_ln2(x, n);
  const float scale = exp2_integer(n);
  return expm1_reduced(r) * scale + (scale - 1.0f);
}

// 1/x for x in [1, 1e38], the only denominators below. A vector division is
// the slowest instruction of the cell loop (it was a third of it): an
// integer first guess and three Newton steps (each doubles the correct bits:
// ~4, 8, 16, 32) cost a few multiply-adds and stay within an ulp or two. The
// last step adds its correction last, r + r (1 - x r): at x = 1 that is
// (1 - e) + (1 - e) e = 1 - e^2, which rounds to exactly 1, so a saturated
// sigmoid is exactly 1 and its derivative exactly 0 with no select. NaN
// propagates through the Newton steps.
inline float reciprocal_approx(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  bits = 0x7EF311C7u - bits;
  float r;
  std::memcpy(&r, &bits, sizeof(r));
  r = r * (2.0f - x * r);
  r = r * (2.0f - x * r);
  return r + r * (1.0f - x * r);
}

inline float sigmoid_approx(float x) {
  // Beyond +-80 the result is 1 or below 2e-35: clamping keeps e^-x in
  // exp_unclamped's range and 1 + e^-x in reciprocal_approx's (NaN passes
  // the comparisons). Below -88 libm's e^-x overflows float and the sigmoid
  // is exactly 0; so is ours.
  const float clamped = x < -80.0f ? -80.0f : (x > 80.0f ? 80.0f : x);
  const float y = reciprocal_approx(1.0f + exp_unclamped(-clamped));
  return x < -88.0f ? 0.0f : y;
}

inline float tanh_approx(float x) {
  // tanh(a) = (e^{2a} - 1) / (e^{2a} + 1) for a = |x|, with e^{2a} - 1 from
  // expm1_nonnegative: accurate near zero as well, with no second formula
  // for small arguments. Clamping keeps e^{2a} small (NaN passes). From
  // 13 ln(2) = 9.0109 on, 1 - tanh(x) < 2^-25 and tanh(x) rounds to exactly
  // 1 in float: return that exactly, so that a saturated unit's derivative
  // 1 - tanh^2 is exactly 0, as in torch.
  const float abs_x = std::fabs(x);
  const float a = abs_x > 9.5f ? 9.5f : abs_x;
  const float em1 = expm1_nonnegative(2.0f * a);
  const float below_one = em1 * reciprocal_approx(em1 + 2.0f);
  return std::copysign(abs_x > 9.0109f ? 1.0f : below_one, x);
}

// The Math policy of common/cell_math.h for the CPU: the approximations for
// float accumulation (float, bfloat16, half), libm for double.
struct FastMath {
  template <typename acc_t>
  static acc_t sigmoid(acc_t x) {
    if constexpr (std::is_same_v<acc_t, float>) {
      return sigmoid_approx(x);
    } else {
      return cell::StdMath::sigmoid(x);
    }
  }
  template <typename acc_t>
  static acc_t tanh(acc_t x) {
    if constexpr (std::is_same_v<acc_t, float>) {
      return tanh_approx(x);
    } else {
      return cell::StdMath::tanh(x);
    }
  }
};

} // namespace cpu
} // namespace deeprnn
