#pragma once

// Vectorisable float activations for the CPU cell kernels.
//
// libm's expf/tanhf are calls the compiler cannot vectorise, and they were
// the largest term of a CPU LSTM step. These are branch-free polynomial
// versions (Cephes-style range reduction, ~2 ulp) that GCC and Clang turn
// into SIMD code inside the cell loops. Double keeps libm: its tests ask for
// 1e-10 and its speed matters less.

#include "common/cell_math.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace deeprnn {
namespace cpu {

inline float exp_approx(float x) {
  // Clamped so that 2^n stays a normal float; NaN passes through the
  // comparisons and the polynomial unchanged.
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  // x - n*ln2 in two parts keeps the reduction exact to float rounding.
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// 1/x for x in [1, 1e38], the only denominators below (1 + e^y with y
// clamped by the callers). A vector division is the slowest instruction of the
// cell loop (it was a third of it); an integer first guess and three Newton
// steps (each doubles the correct bits: ~4, 8, 16, 32) cost a few FMAs and stay
// within an ulp or two, and exact at 1 (where the Newton steps stall one ulp
// below): a saturated sigmoid is exactly 1, so its derivative is exactly 0.
// NaN propagates through the Newton steps.
inline float reciprocal_approx(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  bits = 0x7EF311C7 - bits;
  float r;
  std::memcpy(&r, &bits, sizeof(r));
  r = r * (2.0f - x * r);
  r = r * (2.0f - x * r);
  r = r * (2.0f - x * r);
  return x == 1.0f ? 1.0f : r;
}

inline float sigmoid_approx(float x) {
  // Beyond +-80 the result is 1 or below 2e-35: clamping keeps 1 + e^-x
  // inside reciprocal_approx's range (NaN passes the comparisons). Below -88
  // libm's e^-x overflows float and the sigmoid is exactly 0; so is ours.
  const float clamped = x < -80.0f ? -80.0f : (x > 80.0f ? 80.0f : x);
  const float y = reciprocal_approx(1.0f + exp_approx(-clamped));
  return x < -88.0f ? 0.0f : y;
}

inline float tanh_approx(float x) {
  // Clamping keeps e^{2a} small. From 13*ln(2) = 9.0109 on, 1 - tanh(x) <
  // 2^-25 and tanh(x) rounds to exactly 1 in float: return that exactly, so
  // that a saturated unit's derivative 1 - tanh^2 is exactly 0, as in torch.
  const float abs_x = std::fabs(x);
  const float a = abs_x > 9.5f ? 9.5f : abs_x;
  // Near zero 1 - 2/(e^{2a}+1) cancels; an odd polynomial is exact there.
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = x + x * z * p;
  const float below_one =
      1.0f - 2.0f * reciprocal_approx(exp_approx(2.0f * a) + 1.0f);
  const float large = abs_x > 9.0109f ? 1.0f : below_one;
  return a < 0.625f ? small : std::copysign(large, x);
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
