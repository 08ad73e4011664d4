// Dense C-order tensors: an owning Tensor and a borrowing TensorView.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "eeopt/errors.h"

namespace eeopt {

/// Element types, named as numpy names them ("float32", "int64", "bool", ...).
enum class DType { Float32, Float64, Float16, Int8, Int16, Int32, Int64, UInt8, UInt16, UInt32,
                   UInt64, Bool };

/// The numpy name of a dtype ("float32").
const char* dtype_name(DType dtype);
/// Bytes per element.
std::size_t dtype_size(DType dtype);
/// Parses a numpy name; returns false if the name is not one of the dtypes above.
bool parse_dtype(const std::string& name, DType* out);

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };
template <> struct dtype_of<int8_t> { static constexpr DType value = DType::Int8; };
template <> struct dtype_of<int16_t> { static constexpr DType value = DType::Int16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::Int32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::UInt8; };
template <> struct dtype_of<uint16_t> { static constexpr DType value = DType::UInt16; };
template <> struct dtype_of<uint32_t> { static constexpr DType value = DType::UInt32; };
template <> struct dtype_of<uint64_t> { static constexpr DType value = DType::UInt64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };

/// Number of elements of a shape (1 for a scalar).
int64_t numel(const std::vector<int64_t>& shape);
/// "[2, 3]", as Python prints a list.
std::string shape_str(const std::vector<int64_t>& shape);

class Tensor;

/// A tensor the caller owns: dtype, shape and a pointer to C-order data. Cheap to copy; the
/// data must outlive every use of the view.
struct TensorView {
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  const void* data = nullptr;

  TensorView() = default;
  TensorView(DType dtype_, std::vector<int64_t> shape_, const void* data_)
      : dtype(dtype_), shape(std::move(shape_)), data(data_) {}
  TensorView(const Tensor& t);  // NOLINT(google-explicit-constructor): views are borrowed freely

  /// A view of typed data: TensorView::of(pixels.data(), {n, 1, 28, 28}).
  template <class T>
  static TensorView of(const T* data, std::vector<int64_t> shape) {
    return TensorView(dtype_of<T>::value, std::move(shape), data);
  }
  int64_t numel() const { return eeopt::numel(shape); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
};

/// A tensor that owns its bytes.
class Tensor {
 public:
  Tensor() = default;
  /// Zero-filled.
  Tensor(DType dtype, std::vector<int64_t> shape);
  /// A copy of typed values: Tensor::from<float>({1, 2, 3, 4}, {2, 2}).
  template <class T>
  static Tensor from(const std::vector<T>& values, std::vector<int64_t> shape);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const { return eeopt::numel(shape_); }
  std::size_t nbytes() const { return bytes_.size(); }
  void* raw() { return bytes_.data(); }
  const void* raw() const { return bytes_.data(); }
  /// Typed access; throws DataError if T does not match the dtype.
  template <class T> T* data() { check(dtype_of<T>::value); return static_cast<T*>(raw()); }
  template <class T> const T* data() const {
    check(dtype_of<T>::value);
    return static_cast<const T*>(raw());
  }
  TensorView view() const { return TensorView(dtype_, shape_, raw()); }

 private:
  void check(DType want) const;
  DType dtype_ = DType::Float32;
  std::vector<int64_t> shape_;
  std::vector<unsigned char> bytes_;
};

template <class T>
Tensor Tensor::from(const std::vector<T>& values, std::vector<int64_t> shape) {
  Tensor t(dtype_of<T>::value, std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel()) {
    throw DataError(std::to_string(values.size()) + " values do not fill shape " +
                    shape_str(t.shape_));
  }
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

/// The entries ``index`` of ``t`` along ``axis`` (numpy's take): the runtime's compaction.
Tensor take(const TensorView& t, int axis, const std::vector<int64_t>& index);

}  // namespace eeopt
