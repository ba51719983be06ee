#pragma once

// The switches of optional kernel paths, for the kernels (the state and the
// private operators that set and read it live in ops/schemas.cpp).

#include <cstdint>

namespace deeprnn {

// Whether the CPU's fused small-batch step may run (the private operator
// deeprnn::_cpu_fused_step, or DEEPRNN_CPU_FUSED_STEP; on by default).
bool cpu_fused_step_enabled();

// Counts one layer run by the fused step in _cpu_fused_step_layers.
void count_cpu_fused_step_layer(bool backward);

// The bytes of pre-activation gradients the CPU's general backward loop
// keeps per chunk of steps, as set by the private operator
// deeprnn::_cpu_backward_chunk_bytes; 0: the kernel's own default.
int64_t cpu_backward_chunk_bytes();

} // namespace deeprnn
