// Finds tensors with external data in a serialized ONNX model, without linking protobuf
// (internal; mirrors eeopt/program/onnx_scan.py).
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace eeopt::detail {

/// The bytes are not a protobuf message (ONNX Runtime would refuse them too).
class MalformedModel : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Names of the tensors in the serialized ONNX model ``bytes`` that keep their values in an
/// external file (empty for a self-contained model). ONNX Runtime resolves such a file itself,
/// against the current directory for a model loaded from bytes, outside what the program's
/// sha256 covers; eeopt never writes external data. Walks every path that can hold a
/// TensorProto: initializers, sparse initializers, node attributes and their subgraphs,
/// model-local functions, training graphs. Throws MalformedModel on bytes that are not a
/// protobuf message.
std::vector<std::string> external_data_tensors(const std::string& bytes);

}  // namespace eeopt::detail
