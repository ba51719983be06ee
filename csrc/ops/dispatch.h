#pragma once

// Typed dispatcher calls of the private operators, for the code above the
// backends: the public operators' kernels (ops/) and autograd (autograd/).
// Going through the dispatcher keeps device, autocast and fake-tensor
// dispatch in force. Defined in ops/functional.cpp.

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

namespace deeprnn {
namespace ops {

// deeprnn::_rnn_forward -> (output, hy, cy, reserve)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_forward(
    const at::Tensor& input,
    const std::optional<at::Tensor>& hx,
    const std::optional<at::Tensor>& cx,
    at::TensorList params,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    c10::string_view mode,
    bool need_reserve,
    const std::optional<at::Tensor>& lengths);

// deeprnn::_rnn_backward -> (grad_input, grad_hx, grad_cx, grad_params)
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>
rnn_backward(
    const at::Tensor& input,
    const std::optional<at::Tensor>& hx,
    const std::optional<at::Tensor>& cx,
    at::TensorList params,
    const at::Tensor& output,
    const at::Tensor& reserve,
    const std::optional<at::Tensor>& grad_output,
    const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy,
    bool has_biases,
    int64_t num_layers,
    double dropout,
    bool train,
    bool bidirectional,
    bool batch_first,
    c10::string_view mode,
    std::array<bool, 4> output_mask,
    const std::optional<at::Tensor>& lengths);

} // namespace ops
} // namespace deeprnn
