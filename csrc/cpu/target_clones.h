#pragma once

// The float CPU kernels are compiled for AVX-512, AVX2+FMA and baseline
// x86-64 and picked at load time (GCC function multi-versioning), so one
// binary is both portable and vectorised. A kernel's loops are templates
// marked DEEPRNN_INLINE, inlined into the DEEPRNN_FLOAT_CLONES entry point,
// which gives them the clone's instruction set.

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DEEPRNN_FLOAT_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DEEPRNN_FLOAT_CLONES
#endif
#define DEEPRNN_INLINE inline __attribute__((always_inline))
