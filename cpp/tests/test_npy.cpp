// .npy round trips and the reader's one-line errors; take() (the compaction kernel).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "eeopt/npy.h"

namespace fs = std::filesystem;

namespace {

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("eeopt_npy_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write_raw(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  /// A .npy file with a hand-written header and ``data_bytes`` zero bytes of data.
  fs::path with_header(const std::string& dict, std::size_t data_bytes) {
    std::string header = dict;
    header.append(63 - (10 + header.size()) % 64, ' ');
    header += '\n';
    std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
    bytes += static_cast<char>(header.size() & 0xff);
    bytes += static_cast<char>(header.size() >> 8);
    return write_raw("hand.npy", bytes + header + std::string(data_bytes, '\0'));
  }
  std::string read_error(const fs::path& p) {
    try {
      eeopt::read_npy(p);
    } catch (const eeopt::DataError& e) {
      return e.what();
    }
    return "no error";
  }

  fs::path dir_;
};

template <class T>
void round_trip(const fs::path& path, const std::vector<T>& values, std::vector<int64_t> shape) {
  const eeopt::Tensor t = eeopt::Tensor::from(values, shape);
  eeopt::write_npy(path, t);
  const eeopt::Tensor back = eeopt::read_npy(path);
  EXPECT_EQ(back.dtype(), eeopt::dtype_of<T>::value);
  EXPECT_EQ(back.shape(), shape);
  ASSERT_EQ(back.nbytes(), t.nbytes());
  EXPECT_EQ(std::memcmp(back.raw(), t.raw(), t.nbytes()), 0);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ((bytes.size() - t.nbytes()) % 64, 0u) << "the header is padded to 64 bytes";
}

TEST_F(NpyTest, RoundTripsEveryCommonDtype) {
  round_trip<float>(dir_ / "f4.npy", {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f}, {2, 3});
  round_trip<double>(dir_ / "f8.npy", {1.0 / 3.0, -2.5, 1e300}, {3});
  round_trip<int64_t>(dir_ / "i8.npy", {-(int64_t{1} << 40)}, {});
  round_trip<int32_t>(dir_ / "i4.npy", {1, -2, 3, -4, 5, -6, 7, -8}, {2, 2, 2});
  round_trip<bool>(dir_ / "b1.npy", {true, false, true}, {3});
  round_trip<float>(dir_ / "empty.npy", {}, {0, 4});
}

TEST_F(NpyTest, ReadsTheHeaderNumpyWrites) {
  const fs::path p = with_header("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 24);
  const eeopt::Tensor t = eeopt::read_npy(p);
  EXPECT_EQ(t.dtype(), eeopt::DType::Int64);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{3}));
}

TEST_F(NpyTest, ErrorsAreOneLineNamingTheFile) {
  EXPECT_EQ(read_error(dir_ / "nope.npy"), "input file " + (dir_ / "nope.npy").string() +
                                               " does not exist");
  const fs::path junk = write_raw("junk.npy", "hello, world");
  EXPECT_EQ(read_error(junk), "cannot read " + junk.string() +
                                  " as a .npy file: it does not start with the .npy magic string");
  EXPECT_NE(read_error(with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                                   16)).find("Fortran-order arrays are not supported"),
            std::string::npos);
  EXPECT_NE(read_error(with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
                                   8)).find("big-endian data is not supported"),
            std::string::npos);
  EXPECT_NE(read_error(with_header("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
                                   16)).find("dtype '<c8' is not supported"),
            std::string::npos);
  EXPECT_NE(read_error(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
                                   15)).find("the data is cut off (expected 16 bytes"),
            std::string::npos);
}

TEST_F(NpyTest, AHeaderClaimingMoreThanTheFileHoldsIsRefusedBeforeAllocating) {
  // 2^28 float32s (1 GiB) and 2^43 (32 TiB) in a file of a few hundred bytes: the reader must
  // say the data is cut off, not allocate (std::bad_alloc) and not read past the end.
  EXPECT_NE(read_error(with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (268435456,), }", 16))
                .find("the data is cut off (expected 1073741824 bytes"),
            std::string::npos);
  EXPECT_NE(read_error(with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (8388608, 1048576), }", 16))
                .find("the data is cut off"),
            std::string::npos);
  // a product of dimensions that overflows 64 bits
  EXPECT_NE(read_error(with_header("{'descr': '<f8', 'fortran_order': False, 'shape': "
                                   "(999999999999999999, 999999999999999999), }",
                                   16))
                .find("the data is cut off (expected more bytes"),
            std::string::npos);
  EXPECT_NE(read_error(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                   "(99999999999999999999999,), }",
                                   16))
                .find("dimension too large"),
            std::string::npos);
  // a header length that points past the end of the file
  std::string bytes = std::string("\x93NUMPY\x01\x00\xff\xff", 10) + "{'descr'";
  EXPECT_NE(read_error(write_raw("long_header.npy", bytes)).find("the header is cut off"),
            std::string::npos);
}

TEST(Take, SelectsAlongAnyAxisInOrder) {
  // a[i, j, k] = 100 i + 10 j + k, shape [2, 3, 2]
  std::vector<int32_t> a;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 2; ++k) a.push_back(100 * i + 10 * j + k);
  const eeopt::Tensor t = eeopt::Tensor::from(a, {2, 3, 2});
  const eeopt::Tensor got = eeopt::take(t, 1, {2, 0});
  EXPECT_EQ(got.shape(), (std::vector<int64_t>{2, 2, 2}));
  const std::vector<int32_t> want{20, 21, 0, 1, 120, 121, 100, 101};
  EXPECT_EQ(std::vector<int32_t>(got.data<int32_t>(), got.data<int32_t>() + 8), want);
  const eeopt::Tensor rows = eeopt::take(t, 0, {1});
  EXPECT_EQ(rows.data<int32_t>()[0], 100);
  EXPECT_THROW(eeopt::take(t, 3, {0}), eeopt::DataError);
  EXPECT_THROW(eeopt::take(t, 1, {3}), eeopt::DataError);
}

}  // namespace
