// Checks of what a caller passes to Program::run (internal; mirrors check_inputs in
// eeopt/backends/base.py and Program._resolve_thresholds, with the same messages).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "eeopt/program.h"

namespace eeopt::detail {

/// Checks names, dtypes, ranks and fixed dims of ``inputs`` against ``specs`` and that they
/// agree on the batch; returns the batch size (0 if no input has a batch axis). Throws
/// DataError with one line naming the input and what was expected.
int64_t check_inputs(const std::vector<TensorSpec>& specs, const Inputs& inputs,
                     const std::string& what = "program");

/// The thresholds for one call: the compiled ones, or ``override`` (one per gated exit, no NaN;
/// UsageError otherwise).
std::vector<float> resolve_thresholds(const std::vector<float>& compiled,
                                      const std::optional<std::vector<float>>& override);

}  // namespace eeopt::detail
