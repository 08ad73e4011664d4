// The protobuf wire format walked along the ONNX messages that can hold a TensorProto; field
// numbers are those of onnx.proto (IR version 10).
#include "onnx_scan.h"

#include <cstddef>
#include <cstdint>
#include <map>

namespace eeopt::detail {
namespace {

enum Msg { kModel, kGraph, kNode, kAttr, kFunc, kSparse, kTensor, kTraining };

/// For each message, the message type of its (length-delimited) fields that lead to tensors.
const std::map<int, std::map<uint64_t, Msg>>& children() {
  static const std::map<int, std::map<uint64_t, Msg>> table = {
      {kModel, {{7, kGraph}, {20, kTraining}, {25, kFunc}}},
      {kGraph, {{1, kNode}, {5, kTensor}, {15, kSparse}}},
      {kNode, {{5, kAttr}}},
      {kAttr, {{5, kTensor}, {6, kGraph}, {10, kTensor}, {11, kGraph}, {22, kSparse},
               {23, kSparse}}},
      {kFunc, {{7, kNode}, {11, kAttr}}},
      {kSparse, {{1, kTensor}, {2, kTensor}}},
      {kTraining, {{1, kGraph}, {2, kGraph}}},
      {kTensor, {}},
  };
  return table;
}

constexpr uint64_t kTensorName = 8, kTensorExternalData = 13, kTensorDataLocation = 14;
constexpr int kMaxDepth = 100;  // protobuf's own default recursion limit

uint64_t varint(const std::string& buf, std::size_t& pos, std::size_t end) {
  uint64_t value = 0;
  for (int shift = 0;; shift += 7) {
    if (pos >= end || shift > 63) throw MalformedModel("a varint runs past its message");
    const auto b = static_cast<unsigned char>(buf[pos++]);
    value |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (b < 0x80) return value;
  }
}

void walk(const std::string& buf, std::size_t pos, std::size_t end, Msg kind, int depth,
          std::vector<std::string>& found) {
  if (depth > kMaxDepth) throw MalformedModel("messages nest deeper than protobuf allows");
  const std::map<uint64_t, Msg>& kids = children().at(kind);
  std::string name;
  bool external = false;
  while (pos < end) {
    const uint64_t key = varint(buf, pos, end);
    const uint64_t number = key >> 3;
    const unsigned wire = key & 7;
    std::size_t skip = 0;
    if (wire == 0) {
      const uint64_t value = varint(buf, pos, end);
      if (kind == kTensor && number == kTensorDataLocation && value != 0) external = true;
    } else if (wire == 1) {
      skip = 8;
    } else if (wire == 5) {
      skip = 4;
    } else if (wire == 2) {
      const uint64_t size = varint(buf, pos, end);
      if (size > end - pos) throw MalformedModel("a field runs past its message");
      const auto child = kids.find(number);
      if (child != kids.end()) {
        walk(buf, pos, pos + size, child->second, depth + 1, found);
      } else if (kind == kTensor && number == kTensorExternalData) {
        external = true;
      } else if (kind == kTensor && number == kTensorName) {
        name = buf.substr(pos, size);
      }
      skip = size;
    } else {  // groups (3, 4) are not used by ONNX; 6 and 7 do not exist
      throw MalformedModel("wire type " + std::to_string(wire) + " in field " +
                           std::to_string(number));
    }
    if (skip > end - pos) throw MalformedModel("a field runs past its message");
    pos += skip;
  }
  if (external) found.push_back(name.empty() ? "<unnamed>" : name);
}

}  // namespace

std::vector<std::string> external_data_tensors(const std::string& bytes) {
  std::vector<std::string> found;
  walk(bytes, 0, bytes.size(), kModel, 0, found);
  return found;
}

}  // namespace eeopt::detail
