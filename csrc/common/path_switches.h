#pragma once

// The switches of optional kernel paths, for the kernels (the state and the
// private operators that set and read it live in ops/schemas.cpp).

namespace deeprnn {

// Whether the CPU's fused small-batch step may run (the private operator
// deeprnn::_cpu_fused_step, or DEEPRNN_CPU_FUSED_STEP; on by default).
bool cpu_fused_step_enabled();

// Counts one layer run by the fused step in _cpu_fused_step_layers.
void count_cpu_fused_step_layer(bool backward);

} // namespace deeprnn
