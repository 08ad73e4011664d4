// Small text helpers shared by the messages (internal).
#pragma once

#include <string>
#include <vector>

namespace eeopt::detail {

/// A string as Python's repr() prints it: 'x', or "it's".
std::string repr(const std::string& s);

/// Items joined by ``sep``.
std::string join(const std::vector<std::string>& items, const std::string& sep);

}  // namespace eeopt::detail
