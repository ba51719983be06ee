#pragma once

// A cache of the CPU kernels' large buffers across calls.
//
// A training forward allocates its reserve (tens of MiB for the rows of
// bench.py), keeps it until backward, and the caller frees it after
// backward. glibc serves blocks above its mmap threshold (32 MiB at most)
// with fresh mappings, so every training step page-faulted the whole reserve
// again: on this project's VM a fresh 39 MiB array costs ~12 ms to touch,
// one already mapped 1 ms. The cache keeps freed blocks (up to a cap of idle
// bytes, 256 MiB by default) and hands them to the next request of about the
// same size, as PyTorch's CUDA caching allocator does on the GPU. Besides
// the reserve, the buffers every call allocates afresh come from here too:
// a layer's output between layers, the inference projection chunks, the
// packed weights and the fused loop's panels, backward's chunk buffers, dx
// and the weight gradients (smaller ones, below 256 KiB, go to torch's
// allocator).
//
// The cap: the environment variable DEEPRNN_CPU_BUFFER_CACHE_MB (0 turns
// the cache off) and the private operator deeprnn::_cpu_buffer_cache_bytes;
// deeprnn::_cpu_buffer_cache_stats reads the state. A reused block holds the
// previous call's data: what allocates from here must write every element
// it reads (the kernels do; at::empty gives no zeros either), which the
// tests check with deeprnn::_cpu_buffer_cache_poison (every buffer handed
// out filled with NaNs).

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <c10/util/ArrayRef.h>

namespace deeprnn {
namespace cpu {

// An uninitialised contiguous CPU tensor of `sizes` and `options`'s dtype,
// its storage from the cache when it is large enough to be worth it.
at::Tensor cached_empty(
    at::IntArrayRef sizes,
    const at::TensorOptions& options);

} // namespace cpu
} // namespace deeprnn
