// The one ONNX Runtime environment of the process, with global thread pools (internal).
#pragma once

#include <onnxruntime_cxx_api.h>

#include <memory>
#include <optional>

namespace eeopt::detail {

/// The process-wide Ort::Env, created by the first call with an intra-op pool of ``threads``
/// (0 or std::nullopt: one thread per physical core) and one inter-op thread, as
/// eeopt.backends.ort.configure_threads does. ONNX Runtime cannot resize the pool: a later call
/// asking for another size warns on stderr and keeps it. Every session is created with
/// DisablePerSessionThreads(), so they all share these pools.
std::shared_ptr<Ort::Env> shared_env(std::optional<int> threads);

/// Session options for a stage: shared pools, all graph optimizations, errors-only logging.
Ort::SessionOptions session_options();

}  // namespace eeopt::detail
