// numpy .npy files (format 1.0-3.0): C order, little-endian, the fixed-size dtypes of tensor.h.
#pragma once

#include <filesystem>

#include "eeopt/tensor.h"

namespace eeopt {

/// Reads an .npy file; throws DataError naming the file and the problem (missing, not .npy,
/// Fortran order, big-endian, an unsupported dtype, truncated data).
Tensor read_npy(const std::filesystem::path& path);

/// Writes ``t`` as an .npy file (format 1.0). Writes in place: for an all-or-nothing write,
/// write to a temporary name and rename it.
void write_npy(const std::filesystem::path& path, const TensorView& t);

}  // namespace eeopt
