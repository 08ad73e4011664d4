// .npy reader/writer: the format is a magic string, a Python-dict header, then raw C-order data.
#include "eeopt/npy.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

namespace eeopt {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;

struct Descr {
  const char* text;
  DType dtype;
};
// '<' little-endian, '|' not applicable (1 byte); '=' (native) is read as little-endian.
constexpr Descr kDescrs[] = {
    {"f4", DType::Float32}, {"f8", DType::Float64}, {"f2", DType::Float16},
    {"i1", DType::Int8},    {"i2", DType::Int16},   {"i4", DType::Int32},
    {"i8", DType::Int64},   {"u1", DType::UInt8},   {"u2", DType::UInt16},
    {"u4", DType::UInt32},  {"u8", DType::UInt64},  {"b1", DType::Bool},
};

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& why) {
  throw DataError("cannot read " + path.string() + " as a .npy file: " + why);
}

/// The text after ``'key':`` in the header dict, with leading blanks skipped.
std::size_t value_pos(const std::string& header, const std::string& key,
                      const std::filesystem::path& path) {
  std::size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) fail(path, "the header has no '" + key + "'");
  at = header.find(':', at);
  if (at == std::string::npos) fail(path, "the header is malformed");
  ++at;
  while (at < header.size() && std::isspace(static_cast<unsigned char>(header[at]))) ++at;
  return at;
}

DType parse_descr(const std::string& header, const std::filesystem::path& path) {
  std::size_t at = value_pos(header, "descr", path);
  if (at >= header.size() || (header[at] != '\'' && header[at] != '"')) {
    fail(path, "structured dtypes are not supported");
  }
  const std::size_t end = header.find(header[at], at + 1);
  if (end == std::string::npos) fail(path, "the header is malformed");
  const std::string descr = header.substr(at + 1, end - at - 1);
  const std::string code = descr.size() == 3 ? descr.substr(1) : descr;
  const char order = descr.size() == 3 ? descr[0] : '|';
  for (const auto& d : kDescrs) {
    if (code != d.text) continue;
    if (order == '>' && dtype_size(d.dtype) > 1) fail(path, "big-endian data is not supported");
    if (order != '<' && order != '|' && order != '=' && order != '>') break;
    return d.dtype;
  }
  fail(path, "dtype '" + descr +
                 "' is not supported (use float32, float64, float16, (u)int8-64 or bool)");
}

std::vector<int64_t> parse_shape(const std::string& header, const std::filesystem::path& path) {
  std::size_t at = value_pos(header, "shape", path);
  if (at >= header.size() || header[at] != '(') fail(path, "the header's shape is malformed");
  const std::size_t end = header.find(')', at);
  if (end == std::string::npos) fail(path, "the header's shape is malformed");
  std::vector<int64_t> shape;
  std::string num;
  for (std::size_t i = at + 1; i <= end; ++i) {
    const char c = header[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      num += c;
    } else if (c == ',' || c == ')') {
      // 18 digits always fit in int64; a longer dimension could not be held in memory anyway
      if (num.size() > 18) fail(path, "the header's shape has a dimension too large to hold");
      if (!num.empty()) shape.push_back(std::stoll(num));
      num.clear();
    } else if (!std::isspace(static_cast<unsigned char>(c)) && c != 'L') {
      fail(path, "the header's shape is malformed");
    }
  }
  return shape;
}

bool parse_fortran(const std::string& header, const std::filesystem::path& path) {
  const std::size_t at = value_pos(header, "fortran_order", path);
  if (header.compare(at, 4, "True") == 0) return true;
  if (header.compare(at, 5, "False") == 0) return false;
  fail(path, "the header's fortran_order is malformed");
}

const char* descr_of(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "<f4";
    case DType::Float64: return "<f8";
    case DType::Float16: return "<f2";
    case DType::Int8: return "|i1";
    case DType::Int16: return "<i2";
    case DType::Int32: return "<i4";
    case DType::Int64: return "<i8";
    case DType::UInt8: return "|u1";
    case DType::UInt16: return "<u2";
    case DType::UInt32: return "<u4";
    case DType::UInt64: return "<u8";
    case DType::Bool: return "|b1";
  }
  return "";
}

}  // namespace

Tensor read_npy(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw DataError("input file " + path.string() + " does not exist");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::strerror(errno));
  // what the header claims is checked against what the file holds before anything is allocated
  const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, ec.message());
  char pre[kMagicLen + 2];
  if (!in.read(pre, sizeof pre) || std::memcmp(pre, kMagic, kMagicLen) != 0) {
    fail(path, "it does not start with the .npy magic string");
  }
  const int major = static_cast<unsigned char>(pre[kMagicLen]);
  if (major < 1 || major > 3) fail(path, "format version " + std::to_string(major) + " is unknown");
  unsigned char len_bytes[4] = {0, 0, 0, 0};
  const std::streamsize len_size = major == 1 ? 2 : 4;
  if (!in.read(reinterpret_cast<char*>(len_bytes), len_size)) fail(path, "the header is cut off");
  const std::size_t header_len = len_bytes[0] | (len_bytes[1] << 8) |
                                 (static_cast<std::size_t>(len_bytes[2]) << 16) |
                                 (static_cast<std::size_t>(len_bytes[3]) << 24);
  const std::uintmax_t data_at = kMagicLen + 2 + static_cast<std::uintmax_t>(len_size) +
                                 header_len;
  if (data_at > file_size) fail(path, "the header is cut off");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_len))) {
    fail(path, "the header is cut off");
  }
  const DType dtype = parse_descr(header, path);
  if (parse_fortran(header, path)) fail(path, "Fortran-order arrays are not supported");
  const std::vector<int64_t> shape = parse_shape(header, path);
  std::uintmax_t claimed = dtype_size(dtype);
  bool overflow = false;
  for (int64_t d : shape) {
    const auto n = static_cast<std::uintmax_t>(d);
    if (n != 0 && claimed > std::numeric_limits<std::uintmax_t>::max() / n) overflow = true;
    claimed *= n;
  }
  if (overflow || claimed > file_size - data_at) {
    fail(path, "the data is cut off (expected " +
                   (overflow ? std::string("more") : std::to_string(claimed)) + " bytes for " +
                   dtype_name(dtype) + shape_str(shape) + ", the file holds " +
                   std::to_string(file_size - data_at) + ")");
  }
  Tensor t(dtype, shape);
  if (!in.read(static_cast<char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()))) {
    fail(path, "the data is cut off (expected " + std::to_string(t.nbytes()) + " bytes for " +
                   dtype_name(dtype) + shape_str(t.shape()) + ")");
  }
  return t;
}

void write_npy(const std::filesystem::path& path, const TensorView& t) {
  std::string shape;  // a Python tuple: (), (3,), (2, 3)
  for (int64_t d : t.shape) shape += (shape.empty() ? "" : " ") + std::to_string(d) + ",";
  if (t.shape.size() > 1) shape.pop_back();
  shape = "(" + shape + ")";
  std::string header = std::string("{'descr': '") + descr_of(t.dtype) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  const std::size_t unpadded = kMagicLen + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const char version[2] = {1, 0};
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                static_cast<unsigned char>(header.size() >> 8)};
  out.write(kMagic, kMagicLen);
  out.write(version, 2);
  out.write(reinterpret_cast<const char*>(len), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes()));
  out.close();
  if (!out) throw DataError("cannot write " + path.string() + ": " + std::strerror(errno));
}

}  // namespace eeopt
