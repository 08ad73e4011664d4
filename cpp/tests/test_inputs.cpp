// check_inputs and resolve_thresholds give the one-line messages of eeopt/backends/base.py and
// eeopt/runtime.py.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "inputs.h"

namespace {

using eeopt::DType;
using eeopt::TensorView;

eeopt::Dim fixed(int64_t n) { return {n, ""}; }
eeopt::Dim sym(const std::string& s) { return {std::nullopt, s}; }

// The 'masked' topology's inputs: x float32[N, 5, 6], mask float32[N, 5].
const std::vector<eeopt::TensorSpec> kSpecs{
    {"x", "float32", {sym("N"), fixed(5), fixed(6)}, 0},
    {"mask", "float32", {sym("N"), fixed(5)}, 0},
};
const std::string kExpects = "the program expects: x float32[N, 5, 6], mask float32[N, 5]";
const float kData[1024] = {};

TensorView f32(std::vector<int64_t> shape) { return {DType::Float32, std::move(shape), kData}; }

std::string error(const eeopt::Inputs& in, const std::vector<eeopt::TensorSpec>& specs = kSpecs) {
  try {
    eeopt::detail::check_inputs(specs, in);
  } catch (const eeopt::DataError& e) {
    return e.what();
  }
  return "ok";
}

TEST(CheckInputs, ReturnsTheBatch) {
  EXPECT_EQ(eeopt::detail::check_inputs(kSpecs, {{"x", f32({7, 5, 6})}, {"mask", f32({7, 5})}}),
            7);
  const std::vector<eeopt::TensorSpec> no_batch{{"c", "float32", {fixed(3)}, std::nullopt}};
  EXPECT_EQ(eeopt::detail::check_inputs(no_batch, {{"c", f32({3})}}), 0);
}

TEST(CheckInputs, NamesTheMissingOrUnknownInput) {
  EXPECT_EQ(error({{"x", f32({2, 5, 6})}}), "missing input 'mask'; " + kExpects);
  EXPECT_EQ(error({{"x", f32({2, 5, 6})}, {"mask", f32({2, 5})}, {"zz", f32({2})},
                   {"m", f32({2})}}),
            "unknown input 'm'; " + kExpects);
}

TEST(CheckInputs, NamesTheWrongDtypeRankOrDim) {
  EXPECT_EQ(error({{"x", {DType::Float64, {2, 5, 6}, kData}}, {"mask", f32({2, 5})}}),
            "input 'x' has dtype float64, expected float32; convert it with .astype(np.float32)");
  EXPECT_EQ(error({{"x", f32({2, 5, 6})}, {"mask", f32({2, 5, 1})}}),
            "input 'mask' has shape [2, 5, 1], expected rank 2: mask float32[N, 5]");
  EXPECT_EQ(error({{"x", f32({2, 4, 6})}, {"mask", f32({2, 5})}}),
            "input 'x' has shape [2, 4, 6]; axis 1 must be 5 (x float32[N, 5, 6])");
  EXPECT_EQ(error({{"x", f32({2, 5, 6})}, {"mask", f32({3, 5})}}),
            "input 'mask' has batch size 3 but another input has 2; all inputs must share the "
            "batch dimension");
}

TEST(CheckInputs, SymbolicDimsMustAgree) {
  const std::vector<eeopt::TensorSpec> specs{
      {"a", "float32", {sym("B"), sym("S")}, 0},
      {"b", "float32", {sym("B"), sym("S")}, 0},
  };
  EXPECT_EQ(error({{"a", f32({2, 3})}, {"b", f32({2, 4})}}, specs),
            "input 'b' axis 1 is 4, but dimension 'S' is 3 in another input");
}

TEST(ResolveThresholds, DefaultsOrOneValuePerGatedExit) {
  const std::vector<float> compiled{0.9f, 0.8f};
  const std::vector<std::string> policies{"maxprob", "maxprob"};
  EXPECT_EQ(eeopt::detail::resolve_thresholds(compiled, policies, std::nullopt), compiled);
  EXPECT_EQ(eeopt::detail::resolve_thresholds(compiled, policies, std::vector<float>{2.0f, 0.1f}),
            (std::vector<float>{2.0f, 0.1f}));
  try {
    eeopt::detail::resolve_thresholds(compiled, policies, std::vector<float>{0.5f});
    FAIL();
  } catch (const eeopt::UsageError& e) {
    EXPECT_STREQ(e.what(), "the program has 2 gated exits; got 1 thresholds");
  }
  EXPECT_THROW(eeopt::detail::resolve_thresholds(compiled, policies,
                                                 std::vector<float>{0.5f, NAN}),
               eeopt::UsageError);
}

// Overrides are held to the compile-time range, or to a value that disables the exit: -1 and 0
// once made every row leave at exit 0.
TEST(ResolveThresholds, OverridesKeepTheirPolicysRange) {
  const std::vector<float> compiled{0.9f, 0.8f};
  const std::vector<std::string> maxprob{"maxprob", "maxprob"};
  for (float bad : {-1.0f, 0.0f}) {
    try {
      eeopt::detail::resolve_thresholds(compiled, maxprob, std::vector<float>{0.5f, bad});
      FAIL() << bad;
    } catch (const eeopt::UsageError& e) {
      EXPECT_EQ(std::string(e.what()),
                "thresholds value " + std::string(bad == 0.0f ? "0" : "-1") +
                    " for exit 1 is out of range for policy maxprob: each must be > 0 (above 1 "
                    "disables the exit)");
    }
  }
  EXPECT_EQ(eeopt::detail::check_run_threshold("maxprob", INFINITY), "");
  EXPECT_EQ(eeopt::detail::check_run_threshold("entropy", -1.0f), "");
  EXPECT_NE(eeopt::detail::check_run_threshold("entropy", INFINITY), "");
  EXPECT_NE(eeopt::detail::check_run_threshold("patience", 0.5f), "");
  EXPECT_EQ(eeopt::detail::check_run_threshold("patience", INFINITY), "");
  EXPECT_EQ(eeopt::detail::check_run_threshold("jei", 0.0f), "");
  EXPECT_NE(eeopt::detail::check_run_threshold("twin", -0.5f), "");
}

}  // namespace
