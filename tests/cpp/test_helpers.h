#pragma once

// Helpers shared by the GoogleTest files: tolerant tensor comparison that
// reports where and by how much two tensors differ, and error-message checks.

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <functional>
#include <regex>
#include <sstream>
#include <string>

namespace deeprnn_test {

// float64 agreement to rounding: the two sides sum the same products in a
// different order, nothing more.
constexpr double kTolerance64 = 1e-10;

inline std::string shape_of(const at::Tensor& tensor) {
  std::ostringstream stream;
  stream << tensor.sizes();
  return stream.str();
}

// Checks |actual - expected| <= tol * (1 + |expected|) elementwise.
inline ::testing::AssertionResult tensors_close(
    const at::Tensor& actual,
    const at::Tensor& expected,
    double tol = kTolerance64) {
  if (!actual.defined() || !expected.defined()) {
    return ::testing::AssertionFailure()
        << "undefined tensor: actual " << actual.defined() << ", expected "
        << expected.defined();
  }
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
        << "shape " << shape_of(actual) << " != " << shape_of(expected);
  }
  if (actual.scalar_type() != expected.scalar_type()) {
    return ::testing::AssertionFailure()
        << "dtype " << actual.scalar_type() << " != " << expected.scalar_type();
  }
  if (actual.numel() == 0) {
    return ::testing::AssertionSuccess();
  }
  const at::Tensor a = actual.detach().to(at::kDouble);
  const at::Tensor e = expected.detach().to(at::kDouble);
  const at::Tensor excess = (a - e).abs() - tol * (1 + e.abs());
  if (!a.isfinite().all().item<bool>() || excess.max().item<double>() > 0 ||
      excess.isnan().any().item<bool>()) {
    const int64_t worst = excess.nan_to_num(1e300).argmax().item<int64_t>();
    return ::testing::AssertionFailure()
        << "max |diff| " << (a - e).abs().max().item<double>()
        << ", worst flat index " << worst << ": "
        << a.flatten()[worst].item<double>() << " vs "
        << e.flatten()[worst].item<double>() << " (shape " << shape_of(actual)
        << ")";
  }
  return ::testing::AssertionSuccess();
}

// Runs fn and checks that it throws a c10::Error whose message (without the
// C++ backtrace) matches pattern (std::regex, searched, not fully matched).
inline ::testing::AssertionResult throws_matching(
    const std::function<void()>& fn,
    const std::string& pattern) {
  try {
    fn();
  } catch (const c10::Error& error) {
    const std::string message = error.what_without_backtrace();
    if (std::regex_search(message, std::regex(pattern))) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
        << "message \"" << message << "\" does not match /" << pattern << "/";
  } catch (const std::exception& error) {
    return ::testing::AssertionFailure()
        << "threw a non-c10 exception: " << error.what();
  }
  return ::testing::AssertionFailure()
      << "did not throw (expected /" << pattern << "/)";
}

// A fresh leaf with the same values, so that two computations get separate
// gradients; undefined stays undefined.
inline at::Tensor fresh_leaf(const at::Tensor& tensor) {
  if (!tensor.defined()) {
    return tensor;
  }
  at::Tensor leaf = tensor.detach().clone();
  leaf.requires_grad_(true);
  return leaf;
}

} // namespace deeprnn_test
