#include "values.h"

#include "eeopt/errors.h"
#include "gather.h"

namespace eeopt::detail {
namespace {

ONNXTensorElementDataType onnx_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::Float64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    case DType::Float16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DType::Int8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DType::Int16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16;
    case DType::Int32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DType::Int64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case DType::UInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DType::UInt16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16;
    case DType::UInt32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32;
    case DType::UInt64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64;
    case DType::Bool: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

/// Bytes per element; 0 for types the runtime cannot copy (strings, sub-byte types).
std::size_t element_size(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return 1;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64: return 8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128: return 16;
    default: return 0;
  }
}

}  // namespace

Ort::Value borrow(const Ort::MemoryInfo& memory, const TensorView& t) {
  return Ort::Value::CreateTensor(memory, const_cast<void*>(t.data), t.nbytes(), t.shape.data(),
                                  t.shape.size(), onnx_type(t.dtype));
}

Ort::Value compact(const Ort::Value& v, int axis, const std::vector<int64_t>& keep, int64_t rows,
                   const std::string& what) {
  const auto info = v.GetTensorTypeAndShapeInfo();
  const std::vector<int64_t> shape = info.GetShape();
  const auto type = info.GetElementType();
  const std::size_t size = element_size(type);
  if (axis < 0 || axis >= static_cast<int>(shape.size()) || shape[axis] != rows) {
    throw Error("cannot compact " + what + " along axis " + std::to_string(axis) + ": it has " +
                "shape " + shape_str(shape) + " and the batch has " + std::to_string(rows) +
                " rows; recompile");
  }
  if (size == 0) {
    throw Error("cannot compact " + what + ": its element type (ONNX " + std::to_string(type) +
                ") is not a fixed-size type");
  }
  std::vector<int64_t> out_shape = shape;
  out_shape[axis] = static_cast<int64_t>(keep.size());
  Ort::AllocatorWithDefaultOptions allocator;
  Ort::Value out = Ort::Value::CreateTensor(allocator, out_shape.data(), out_shape.size(), type);
  gather_axis(v.GetTensorRawData(), out.GetTensorMutableRawData(), shape, axis, size, keep.data(),
              keep.size());
  return out;
}

const void* checked_data(const Ort::Value& v, ONNXTensorElementDataType type,
                         const std::vector<int64_t>& shape, const std::string& what) {
  const auto info = v.GetTensorTypeAndShapeInfo();
  if (info.GetElementType() != type || info.GetShape() != shape) {
    throw Error(what + " has ONNX element type " + std::to_string(info.GetElementType()) +
                " and shape " + shape_str(info.GetShape()) + ", expected type " +
                std::to_string(type) + " and shape " + shape_str(shape) + "; recompile");
  }
  return v.GetTensorRawData();
}

}  // namespace eeopt::detail
