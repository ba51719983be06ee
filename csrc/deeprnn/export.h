#pragma once

// Symbol visibility for libdeeprnn. The library is built with hidden
// visibility by default so that only the documented API is exported.
#if defined(_WIN32)
#if defined(DEEPRNN_BUILDING_LIBRARY)
#define DEEPRNN_API __declspec(dllexport)
#else
#define DEEPRNN_API __declspec(dllimport)
#endif
#else
#define DEEPRNN_API __attribute__((visibility("default")))
#endif
