// The one copy kernel of the runtime: select entries along one axis (internal).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace eeopt::detail {

/// Copies entries ``index[0..count)`` of a C-order array of ``shape`` along ``axis`` into
/// ``dst`` (shape with shape[axis] = count). Indices must be in range; the caller checks.
void gather_axis(const void* src, void* dst, const std::vector<int64_t>& shape, int axis,
                 std::size_t elem_size, const int64_t* index, std::size_t count);

}  // namespace eeopt::detail
