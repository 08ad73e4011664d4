// The run loop on make_test_program.py's program, where every row's exit and logits are known:
// exit 0 if x[:, 0] >= t0, else exit 1 if x[:, 1] >= t1, else exit 2; logits x, x + 6, 2x + 100.
// Its carried tensors are compacted along axis 1 ("t"), axis 0 ("y", "x") and not at all ("c").
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "eeopt/program.h"

namespace fs = std::filesystem;

namespace {

/// The program ctest writes first; empty if it could not (no Python with eeopt and onnx).
fs::path program_dir() {
  const char* dir = std::getenv("EEOPT_TEST_PROGRAM");
  return dir && fs::is_regular_file(fs::path(dir) / "manifest.json") ? fs::path(dir) : fs::path();
}

class ProgramTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!program_dir().empty()) {
      program_ = new eeopt::Program(eeopt::Program::load(program_dir(), 1));
    }
  }
  static void TearDownTestSuite() {
    delete program_;
    program_ = nullptr;
  }
  void SetUp() override {
    if (!program_) {
      GTEST_SKIP() << "no test program: EEOPT_TEST_PROGRAM must name a directory that "
                      "cpp/tests/make_test_program.py wrote (ctest does this first)";
    }
  }

  static eeopt::Tensor random_x(int64_t rows, unsigned seed) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    eeopt::Tensor x(eeopt::DType::Float32, {rows, 4});
    for (int64_t i = 0; i < rows * 4; ++i) x.data<float>()[i] = u(gen);
    return x;
  }

  /// Checks every row's exit and logits against the rule; returns the exit counts.
  static std::vector<int> check(const eeopt::Tensor& x, const eeopt::Result& res, float t0,
                                float t1) {
    const float* v = x.data<float>();
    std::vector<int> counts(3, 0);
    EXPECT_EQ(res.rows, x.shape()[0]);
    EXPECT_EQ(res.num_classes, 4);
    for (int64_t i = 0; i < res.rows; ++i) {
      const float* r = v + i * 4;
      const int64_t want = r[0] >= t0 ? 0 : r[1] >= t1 ? 1 : 2;
      EXPECT_EQ(res.exits[i], want) << "row " << i;
      for (int j = 0; j < 4; ++j) {
        const float logit = want == 0 ? r[j] : want == 1 ? r[j] + 6.0f : 2.0f * r[j] + 100.0f;
        EXPECT_FLOAT_EQ(res.logits[i * 4 + j], logit) << "row " << i << " class " << j;
      }
      ++counts[res.exits[i]];
    }
    return counts;
  }

  static eeopt::Program* program_;
};

eeopt::Program* ProgramTest::program_ = nullptr;

TEST_F(ProgramTest, ReportsTheManifest) {
  EXPECT_EQ(program_->num_exits(), 3);
  EXPECT_EQ(program_->num_classes(), 4);
  EXPECT_EQ(program_->thresholds(), (std::vector<float>{0.5f, 0.5f}));
  EXPECT_EQ(program_->exit_names(), (std::vector<std::string>{"exit0", "exit1", "exit2"}));
  ASSERT_EQ(program_->inputs().size(), 1u);
  EXPECT_EQ(program_->inputs()[0].describe(), "x float32[N, 4]");
  EXPECT_EQ(eeopt::global_threads(), 1);
}

TEST_F(ProgramTest, MixedExitsComeBackInRowOrder) {
  const eeopt::Tensor x = random_x(64, 1);
  eeopt::RunStats stats;
  for (auto thr : {std::vector<float>{0.5f, 0.5f}, std::vector<float>{0.3f, 0.8f}}) {
    const auto counts = check(x, program_->run(x, thr, &stats), thr[0], thr[1]);
    EXPECT_GT(counts[0], 0);
    EXPECT_GT(counts[1], 0);
    EXPECT_GT(counts[2], 0);
    ASSERT_EQ(stats.rows.size(), 3u);
    EXPECT_EQ(stats.rows[0], 64);
    EXPECT_EQ(stats.rows[1], 64 - counts[0]);
    EXPECT_EQ(stats.rows[2], counts[2]);
  }
  check(x, program_->run(x), 0.5f, 0.5f);  // the compiled thresholds
}

TEST_F(ProgramTest, StopsOnceNoRowRemains) {
  const eeopt::Tensor x = random_x(9, 2);
  eeopt::RunStats stats;
  check(x, program_->run(x, std::vector<float>{0.0f, 0.0f}, &stats), 0.0f, 0.0f);
  EXPECT_EQ(stats.rows, (std::vector<int64_t>{9}));
  check(x, program_->run(x, std::vector<float>{2.0f, 2.0f}, &stats), 2.0f, 2.0f);
  EXPECT_EQ(stats.rows, (std::vector<int64_t>{9, 9, 9}));
  check(x, program_->run(x, std::vector<float>{2.0f, 0.0f}, &stats), 2.0f, 0.0f);
  EXPECT_EQ(stats.rows, (std::vector<int64_t>{9, 9}));
}

TEST_F(ProgramTest, HandlesOneRowAndNoRows) {
  const eeopt::Tensor one = random_x(1, 3);
  check(one, program_->run(one, std::vector<float>{0.5f, 0.5f}), 0.5f, 0.5f);
  const eeopt::Tensor none(eeopt::DType::Float32, {0, 4});
  eeopt::RunStats stats;
  const eeopt::Result res = program_->run(none, std::nullopt, &stats);
  EXPECT_EQ(res.rows, 0);
  EXPECT_TRUE(res.logits.empty());
  EXPECT_TRUE(stats.rows.empty());
}

TEST_F(ProgramTest, ValidatesInputsAndThresholds) {
  const eeopt::Tensor x = random_x(4, 4);
  try {
    program_->run({{"x", x}, {"y", x}});
    FAIL();
  } catch (const eeopt::DataError& e) {
    EXPECT_STREQ(e.what(), "unknown input 'y'; the program expects: x float32[N, 4]");
  }
  const eeopt::Tensor wide(eeopt::DType::Float32, {4, 5});
  EXPECT_THROW(program_->run(wide), eeopt::DataError);
  EXPECT_THROW(program_->run(x, std::vector<float>{0.5f}), eeopt::UsageError);
}

TEST_F(ProgramTest, RunsFromManyThreadsAtOnce) {
  std::vector<std::thread> threads;
  std::vector<int> failures(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([t, &failures] {
      for (int r = 0; r < 25; ++r) {
        const eeopt::Tensor x = random_x(1 + (t * 7 + r) % 40, static_cast<unsigned>(t * 100 + r));
        const eeopt::Result res = program_->run(x, std::vector<float>{0.4f, 0.6f});
        const float* v = x.data<float>();
        for (int64_t i = 0; i < res.rows; ++i) {
          const int64_t want = v[i * 4] >= 0.4f ? 0 : v[i * 4 + 1] >= 0.6f ? 1 : 2;
          const float a = v[i * 4];  // the stages' arithmetic, so the comparison can be exact
          const float first = want == 0 ? a : want == 1 ? a + 6.0f : (a + 100.0f) + a;
          failures[t] += res.exits[i] != want || res.logits[i * 4] != first;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(8, 0));
}

TEST_F(ProgramTest, RefusesATamperedCopy) {
  const fs::path copy = fs::temp_directory_path() / "eeopt_tampered_program";
  fs::remove_all(copy);
  fs::copy(program_dir(), copy, fs::copy_options::recursive);
  std::ofstream(copy / "stage1.onnx", std::ios::app | std::ios::binary) << '\0';
  try {
    eeopt::Program::load(copy);
    FAIL();
  } catch (const eeopt::ManifestError& e) {
    EXPECT_STREQ(e.what(), "stage 1 file stage1.onnx does not match its sha256 in the manifest "
                           "(modified or corrupted); recompile the program");
  }
  fs::remove_all(copy);
}

}  // namespace
