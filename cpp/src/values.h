// Ort::Value helpers for the run loop (internal): borrow a caller's tensor, compact a carried
// tensor along its batch axis, check a stage's outputs.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "eeopt/tensor.h"

namespace eeopt::detail {

/// An Ort::Value over the caller's memory (no copy; ORT never writes a session input).
Ort::Value borrow(const Ort::MemoryInfo& memory, const TensorView& t);

/// The entries ``keep`` of ``v`` along ``axis`` as a new tensor. ``rows`` is the batch the
/// tensor must have on that axis; ``what`` names it in errors.
Ort::Value compact(const Ort::Value& v, int axis, const std::vector<int64_t>& keep, int64_t rows,
                   const std::string& what);

/// The data of a stage output after checking its element type and shape; throws Error naming
/// ``what`` otherwise.
const void* checked_data(const Ort::Value& v, ONNXTensorElementDataType type,
                         const std::vector<int64_t>& shape, const std::string& what);

}  // namespace eeopt::detail
