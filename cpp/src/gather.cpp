#include "gather.h"

#include <cstring>

namespace eeopt::detail {

void gather_axis(const void* src, void* dst, const std::vector<int64_t>& shape, int axis,
                 std::size_t elem_size, const int64_t* index, std::size_t count) {
  std::size_t outer = 1;
  for (int a = 0; a < axis; ++a) outer *= static_cast<std::size_t>(shape[a]);
  std::size_t inner = elem_size;  // bytes of one entry along the axis
  for (std::size_t a = static_cast<std::size_t>(axis) + 1; a < shape.size(); ++a) {
    inner *= static_cast<std::size_t>(shape[a]);
  }
  const auto extent = static_cast<std::size_t>(shape[axis]);
  const auto* in = static_cast<const unsigned char*>(src);
  auto* out = static_cast<unsigned char*>(dst);
  for (std::size_t o = 0; o < outer; ++o) {
    const unsigned char* block = in + o * extent * inner;
    for (std::size_t j = 0; j < count; ++j, out += inner) {
      std::memcpy(out, block + static_cast<std::size_t>(index[j]) * inner, inner);
    }
  }
}

}  // namespace eeopt::detail
