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

/// The thresholds for one call: the compiled ones, or ``override``: one per gated exit, each in
/// its policy's range or a value that disables the exit (kernels/reference.py's
/// check_run_threshold: maxprob, margin and learned policies above 1, entropy below 0,
/// patience inf); UsageError otherwise, with the Python runtime's message.
std::vector<float> resolve_thresholds(const std::vector<float>& compiled,
                                      const std::vector<std::string>& policies,
                                      const std::optional<std::vector<float>>& override);

/// Empty if ``t`` may override ``policy``'s threshold at run time, else the rule it breaks.
std::string check_run_threshold(const std::string& policy, float t);

}  // namespace eeopt::detail
