// The CPU cell kernels' float activations (csrc/cpu/fast_math.h) against
// libm in double, over a dense sample of every float in [-120, 120]: the
// error in ulps, and the exact values that the cells' derivatives rely on
// (a saturated gate is exactly 0 or 1, tanh is odd, NaN propagates). The
// activations run in a loop compiled as the kernels are
// (DEEPRNN_FLOAT_CLONES), so this checks the vectorised code the CPU picks.

#include "cpu/fast_math.h"
#include "cpu/target_clones.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using deeprnn::cpu::sigmoid_approx;
using deeprnn::cpu::tanh_approx;

DEEPRNN_FLOAT_CLONES void sigmoid_all(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    y[i] = sigmoid_approx(x[i]);
  }
}

DEEPRNN_FLOAT_CLONES void tanh_all(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    y[i] = tanh_approx(x[i]);
  }
}

// Every 97th float in [0, 120) and its negation: ~23 million arguments,
// every binade from the smallest denormal up.
std::vector<float> sample_arguments() {
  std::vector<float> xs;
  for (uint32_t bits = 0; bits < 0x42F00000u; bits += 97) { // 120.0f
    float x;
    std::memcpy(&x, &bits, sizeof x);
    xs.push_back(x);
    xs.push_back(-x);
  }
  return xs;
}

// |got - want| in units of the last place of float(want).
double ulps(float got, double want) {
  const float rounded = static_cast<float>(want);
  const float magnitude = std::fabs(rounded);
  const double ulp = magnitude < std::numeric_limits<float>::min()
      ? std::numeric_limits<float>::denorm_min()
      : std::nextafter(magnitude, std::numeric_limits<float>::infinity()) -
          magnitude;
  return std::fabs(static_cast<double>(got) - want) / ulp;
}

std::vector<float> evaluate(
    void (*f)(const float*, float*, int64_t),
    const std::vector<float>& xs) {
  std::vector<float> ys(xs.size());
  f(xs.data(), ys.data(), static_cast<int64_t>(xs.size()));
  return ys;
}

// The largest error seen and where.
struct Worst {
  double ulps = 0.0;
  float x = 0.0f;
  void see(float at, double error) {
    if (error > ulps) {
      ulps = error;
      x = at;
    }
  }
};

TEST(FastMath, SigmoidIsWithinThreeUlpsOfLibm) {
  const std::vector<float> xs = sample_arguments();
  const std::vector<float> ys = evaluate(sigmoid_all, xs);
  Worst worst;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double x = xs[i];
    const double want = 1.0 / (1.0 + std::exp(-x));
    if (x < -88.0) {
      // libm's e^-x overflows float: exactly 0, as torch's sigmoid.
      ASSERT_EQ(ys[i], 0.0f) << "x = " << xs[i];
    } else if (x < -80.0) {
      // Clamped at -80: below 2e-35, the documented absolute error.
      ASSERT_LE(ys[i], 2e-35f) << "x = " << xs[i];
      ASSERT_GE(ys[i], 0.0f) << "x = " << xs[i];
    } else {
      worst.see(xs[i], ulps(ys[i], want));
    }
  }
  EXPECT_LE(worst.ulps, 3.0) << "worst at x = " << worst.x;
}

TEST(FastMath, TanhIsWithinFourUlpsOfLibmAndOdd) {
  const std::vector<float> xs = sample_arguments();
  const std::vector<float> ys = evaluate(tanh_all, xs);
  Worst worst;
  for (size_t i = 0; i < xs.size(); ++i) {
    worst.see(xs[i], ulps(ys[i], std::tanh(static_cast<double>(xs[i]))));
    // xs holds x, -x pairs: tanh(-x) is exactly -tanh(x), signed zero too.
    if (i % 2 == 1) {
      ASSERT_EQ(ys[i], -ys[i - 1]) << "x = " << xs[i - 1];
      ASSERT_EQ(std::signbit(ys[i]), !std::signbit(ys[i - 1]))
          << "x = " << xs[i - 1];
    }
  }
  EXPECT_LE(worst.ulps, 4.0) << "worst at x = " << worst.x;
}

TEST(FastMath, SaturatedValuesAreExact) {
  // Exact 0, 1 and +-1 make a saturated unit's derivative exactly 0, as in
  // torch (s (1 - s), 1 - tanh^2).
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> ones = {16.7f, 17.0f, 30.0f, 80.0f, 1e30f, inf};
  for (const float y : evaluate(sigmoid_all, ones)) {
    EXPECT_EQ(y, 1.0f);
  }
  const std::vector<float> zeros = {-88.5f, -100.0f, -1e30f, -inf};
  for (const float y : evaluate(sigmoid_all, zeros)) {
    EXPECT_EQ(y, 0.0f);
  }
  const std::vector<float> large = {9.0110f, 9.5f, 20.0f, 1e30f, inf};
  for (const float y : evaluate(tanh_all, large)) {
    EXPECT_EQ(y, 1.0f);
  }
  std::vector<float> negative_large;
  for (const float x : large) {
    negative_large.push_back(-x);
  }
  for (const float y : evaluate(tanh_all, negative_large)) {
    EXPECT_EQ(y, -1.0f);
  }
  // Where libm's float sigmoid rounds to 1, so does ours.
  std::vector<float> xs;
  for (float x = 8.0f; x < 20.0f; x = std::nextafter(x, 20.0f)) {
    xs.push_back(x);
  }
  const std::vector<float> ys = evaluate(sigmoid_all, xs);
  for (size_t i = 0; i < xs.size(); ++i) {
    const double want = 1.0 / (1.0 + std::exp(-static_cast<double>(xs[i])));
    if (static_cast<float>(want) == 1.0f && 1.0 - want < 0x1p-26) {
      ASSERT_EQ(ys[i], 1.0f) << "x = " << xs[i];
    }
  }
}

TEST(FastMath, NaNPropagates) {
  const std::vector<float> nans = {
      std::numeric_limits<float>::quiet_NaN(),
      -std::numeric_limits<float>::quiet_NaN()};
  for (const float y : evaluate(sigmoid_all, nans)) {
    EXPECT_TRUE(std::isnan(y));
  }
  for (const float y : evaluate(tanh_all, nans)) {
    EXPECT_TRUE(std::isnan(y));
  }
}

} // namespace
