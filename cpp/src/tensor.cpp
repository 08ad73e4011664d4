#include "eeopt/tensor.h"

#include <array>
#include <utility>

#include "gather.h"

namespace eeopt {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t size;
};

constexpr std::array<DTypeInfo, 12> kDTypes{{
    {DType::Float32, "float32", 4}, {DType::Float64, "float64", 8},
    {DType::Float16, "float16", 2}, {DType::Int8, "int8", 1},
    {DType::Int16, "int16", 2},     {DType::Int32, "int32", 4},
    {DType::Int64, "int64", 8},     {DType::UInt8, "uint8", 1},
    {DType::UInt16, "uint16", 2},   {DType::UInt32, "uint32", 4},
    {DType::UInt64, "uint64", 8},   {DType::Bool, "bool", 1},
}};

const DTypeInfo& info(DType dtype) { return kDTypes[static_cast<std::size_t>(dtype)]; }

}  // namespace

const char* dtype_name(DType dtype) { return info(dtype).name; }
std::size_t dtype_size(DType dtype) { return info(dtype).size; }

bool parse_dtype(const std::string& name, DType* out) {
  for (const auto& d : kDTypes) {
    if (name == d.name) {
      *out = d.dtype;
      return true;
    }
  }
  return false;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

TensorView::TensorView(const Tensor& t) : dtype(t.dtype()), shape(t.shape()), data(t.raw()) {}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_) {
    if (d < 0) throw DataError("shape " + shape_str(shape_) + " has a negative dimension");
  }
  bytes_.assign(static_cast<std::size_t>(eeopt::numel(shape_)) * dtype_size(dtype_), 0);
}

void Tensor::check(DType want) const {
  if (want != dtype_) {
    throw DataError(std::string("tensor has dtype ") + dtype_name(dtype_) + ", not " +
                    dtype_name(want));
  }
}

Tensor take(const TensorView& t, int axis, const std::vector<int64_t>& index) {
  const int rank = static_cast<int>(t.shape.size());
  if (axis < 0 || axis >= rank) {
    throw DataError("axis " + std::to_string(axis) + " is out of range for shape " +
                    shape_str(t.shape));
  }
  for (int64_t i : index) {
    if (i < 0 || i >= t.shape[axis]) {
      throw DataError("index " + std::to_string(i) + " is out of range for axis " +
                      std::to_string(axis) + " of shape " + shape_str(t.shape));
    }
  }
  std::vector<int64_t> shape = t.shape;
  shape[axis] = static_cast<int64_t>(index.size());
  Tensor out(t.dtype, shape);
  detail::gather_axis(t.data, out.raw(), t.shape, axis, dtype_size(t.dtype), index.data(),
                      index.size());
  return out;
}

}  // namespace eeopt
