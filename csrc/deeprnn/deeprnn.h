#pragma once

// Umbrella header of deeprnn: the functional API, options and modules.

#include <deeprnn/modules.h>
#include <deeprnn/ops.h>
#include <deeprnn/options.h>

namespace deeprnn {
namespace detail {
// Initialised at load time of every program that includes this header, so
// the reference keeps libdeeprnn (and its TORCH_LIBRARY registrations) in
// the link even under --as-needed.
inline const int64_t kLinkAnchor = link_anchor();
} // namespace detail
} // namespace deeprnn
