// Program::load refuses every broken program directory with ManifestError and the message
// eeopt/manifest.py gives. The programs here hold dummy stage files and backend "test", so a
// load that passes every file check stops at the backend check, before ONNX Runtime.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "eeopt/program.h"
#include "manifest.h"
#include "onnx_scan.h"
#include "text.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json tensor(const std::string& name) {
  return {{"name", name}, {"dtype", "float32"}, {"shape", {"N", 4}}, {"batch_axis", 0}};
}

json stage(int k, bool last) {
  json s = {{"index", k},
            {"file", "stage" + std::to_string(k) + ".onnx"},
            {"sha256", ""},
            {"exit_output", "exit" + std::to_string(k)},
            {"inputs", {tensor("x")}},
            {"produces", json::array()},
            {"carry_after", last ? json::array() : json::array({"x"})},
            {"logits", "logits" + std::to_string(k)},
            {"decision", last ? json() : json("decision")},
            {"threshold_input", last ? json() : json("eeopt_threshold")},
            {"gate", last ? json() : json({{"policy", "maxprob"}, {"threshold", 0.5},
                                           {"features", {"max_prob"}}})}};
  return s;
}

class ManifestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("eeopt_manifest_" + std::string(::testing::UnitTest::GetInstance()
                                                ->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    manifest_ = {{"schema_version", 1},   {"eeopt_version", "0.1.0"},
                 {"backend", "test"},     {"backend_version", "1"},
                 {"onnx_opset", 17},      {"inputs", {tensor("x")}},
                 {"num_classes", 4},      {"stages", {stage(0, false), stage(1, true)}}};
    for (int k = 0; k < 2; ++k) {
      const std::string bytes = "not really onnx " + std::to_string(k);
      std::ofstream(dir_ / ("stage" + std::to_string(k) + ".onnx"), std::ios::binary) << bytes;
      manifest_["stages"][k]["sha256"] = eeopt::detail::sha256_hex(bytes);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// Writes the manifest and returns Program::load's error message.
  std::string load_error() {
    std::ofstream(dir_ / "manifest.json") << manifest_.dump(2);
    try {
      eeopt::Program::load(dir_);
    } catch (const eeopt::ManifestError& e) {
      return e.what();
    }
    return "loaded";
  }

  fs::path dir_;
  json manifest_;
};

TEST_F(ManifestTest, AValidProgramPassesEveryFileCheck) {
  EXPECT_EQ(load_error(), dir_.string() + " was compiled for backend 'test'; this runtime runs "
                                          "'onnxruntime' programs");
}

TEST_F(ManifestTest, RefusesAnotherSchemaVersion) {
  manifest_["schema_version"] = 2;
  EXPECT_EQ(load_error(), "manifest: schema_version 2 is not supported by this eeopt (it reads "
                          "1); recompile the program with this version");
  manifest_.erase("schema_version");
  EXPECT_NE(load_error().find("schema_version None is not supported"), std::string::npos);
  manifest_["schema_version"] = "1";
  EXPECT_NE(load_error().find("schema_version '1' is not supported"), std::string::npos);
}

TEST_F(ManifestTest, RefusesATamperedStageFile) {
  std::ofstream(dir_ / "stage1.onnx", std::ios::app) << "!";
  EXPECT_EQ(load_error(), "stage 1 file stage1.onnx does not match its sha256 in the manifest "
                          "(modified or corrupted); recompile the program");
}

TEST_F(ManifestTest, RefusesAMissingStageFile) {
  fs::remove(dir_ / "stage0.onnx");
  EXPECT_EQ(load_error(), "stage 0 file stage0.onnx is missing from " + dir_.string() +
                              "; recompile");
}

TEST_F(ManifestTest, RefusesPathsLeavingTheDirectory) {
  manifest_["stages"][1]["file"] = "../stage1.onnx";
  EXPECT_EQ(load_error(), "manifest: file '../stage1.onnx' points outside the program directory");
  manifest_["stages"][1]["file"] = "/etc/passwd";
  EXPECT_EQ(load_error(), "manifest: file '/etc/passwd' is not a relative path inside " +
                              dir_.string());
  const fs::path outside = dir_.string() + "_outside.onnx";
  fs::copy_file(dir_ / "stage1.onnx", outside, fs::copy_options::overwrite_existing);
  fs::create_symlink(outside, dir_ / "link.onnx");
  manifest_["stages"][1]["file"] = "link.onnx";
  EXPECT_EQ(load_error(), "manifest: file 'link.onnx' points outside the program directory");
  fs::remove(outside);
}

TEST_F(ManifestTest, AcceptsASymlinkThatStaysInside) {
  fs::create_directories(dir_ / "sub");
  fs::rename(dir_ / "stage1.onnx", dir_ / "sub" / "real.onnx");
  fs::create_symlink("sub/real.onnx", dir_ / "stage1.onnx");
  EXPECT_NE(load_error().find("was compiled for backend 'test'"), std::string::npos);
}

TEST_F(ManifestTest, ChecksTheSequenceItMayTrim) {
  manifest_["inputs"].push_back({{"name", "mask"}, {"dtype", "int64"}, {"shape", {"N", "seq"}},
                                 {"batch_axis", 0}});
  manifest_["sequence"] = {{"mask", "mask"}, {"axes", {{"mask", 1}}}};
  EXPECT_NE(load_error().find("was compiled for backend 'test'"), std::string::npos);
  manifest_["sequence"]["axes"]["nowhere"] = 1;
  EXPECT_EQ(load_error(), "manifest: sequence.axes names 'nowhere', which is no tensor of the "
                          "program; recompile");
  manifest_["sequence"]["axes"].erase("nowhere");
  manifest_["sequence"]["axes"]["x"] = 0;  // x's batch axis
  EXPECT_EQ(load_error(), "manifest: sequence.axes gives 'x' axis 0, which is not one of its "
                          "non-batch axes; recompile");
  manifest_["sequence"]["axes"].erase("x");
  manifest_["sequence"]["mask"] = "x";
  manifest_["inputs"][0]["shape"] = {"N", 4, 2};
  EXPECT_EQ(load_error(), "manifest: sequence.mask 'x' is not a [batch, seq] input; recompile");
  manifest_["sequence"] = {{"mask", "mask"}, {"axes", json::object()}};
  EXPECT_EQ(load_error(), "manifest: sequence.axes must give the mask axis 1; recompile");
  manifest_["sequence"] = 3;
  EXPECT_EQ(load_error(), "manifest: sequence must be an object or absent; recompile");
}

TEST_F(ManifestTest, NamesTheBrokenField) {
  manifest_["stages"][0].erase("sha256");
  EXPECT_EQ(load_error(), "manifest: stages[0] is missing the field 'sha256'; recompile");
  manifest_["stages"][0]["sha256"] = 5;
  EXPECT_EQ(load_error(), "manifest: stages[0].sha256 has the wrong type; recompile");
  SetUp();
  manifest_["stages"][1]["inputs"][0]["shape"] = {"N", 1.5};
  EXPECT_EQ(load_error(), "manifest: stages[1].inputs.shape holds 1.5; recompile");
  SetUp();
  manifest_["inputs"][0]["batch_axis"] = "0";
  EXPECT_EQ(load_error(), "manifest: inputs.batch_axis must be an int or null; recompile");
  SetUp();
  manifest_["stages"].erase(1);
  EXPECT_EQ(load_error(), "manifest: a program needs at least 2 stages; recompile");
  SetUp();
  manifest_["stages"][1]["gate"] = manifest_["stages"][0]["gate"];
  EXPECT_EQ(load_error(), "manifest: stages[1] must not carry a gate; recompile");
  SetUp();
  manifest_["stages"][1]["index"] = 3;
  EXPECT_EQ(load_error(), "manifest: stages[1] has index 3; recompile");
  SetUp();
  manifest_["stages"][1]["inputs"] = {tensor("h")};
  EXPECT_EQ(load_error(), "manifest: stages[1] reads 'h', which no earlier stage carries; "
                          "recompile");
}

// eeopt/program/manifest.schema.json is the schema the Python loader is tested against too:
// every field it requires, this loader requires, and names when it is missing.
TEST_F(ManifestTest, RequiresWhatTheSchemaRequires) {
  std::ifstream file(EEOPT_MANIFEST_SCHEMA);
  ASSERT_TRUE(file.good()) << EEOPT_MANIFEST_SCHEMA;
  const json schema = json::parse(file);
  const std::vector<std::pair<std::string, std::vector<std::string>>> places = {
      {"top", schema["required"].get<std::vector<std::string>>()},
      {"stage", schema["$defs"]["stage"]["required"].get<std::vector<std::string>>()},
      {"tensor", schema["$defs"]["tensor"]["required"].get<std::vector<std::string>>()},
      {"gate", schema["$defs"]["gate"]["required"].get<std::vector<std::string>>()},
  };
  int checked = 0;
  for (const auto& [where, fields] : places) {
    for (const std::string& field : fields) {
      SetUp();
      json& holder = where == "top"      ? manifest_
                     : where == "stage"  ? manifest_["stages"][0]
                     : where == "tensor" ? manifest_["inputs"][0]
                                         : manifest_["stages"][0]["gate"];
      holder.erase(field);
      const std::string want = field == "schema_version"
                                   ? "schema_version None is not supported"
                                   : "is missing the field '" + field + "'";
      EXPECT_NE(load_error().find(want), std::string::npos) << where << "." << field;
      ++checked;
    }
  }
  EXPECT_GE(checked, 20);
}

// A tampered manifest once ran and gave wrong output: a batch axis past the tensor's rank
// returned 0 rows; a -5 threshold was taken.
TEST_F(ManifestTest, RefusesAxesPastTheRankAndThresholdsOutOfRange) {
  manifest_["inputs"][0]["batch_axis"] = 5;
  EXPECT_EQ(load_error(), "manifest: inputs 'x' has batch_axis 5, but its shape has 2 axes; "
                          "recompile");
  SetUp();
  manifest_["stages"][0]["gate"]["threshold"] = -5;
  EXPECT_EQ(load_error(), "manifest: stages[0].gate.threshold -5 is out of range for policy "
                          "maxprob: each must be > 0 (above 1 disables the exit); recompile");
}

TEST_F(ManifestTest, RefusesWhatIsNotAProgram) {
  EXPECT_EQ(load_error(), dir_.string() + " was compiled for backend 'test'; this runtime runs "
                                          "'onnxruntime' programs");
  fs::remove(dir_ / "manifest.json");
  EXPECT_THROW(
      {
        try {
          eeopt::Program::load(dir_);
        } catch (const eeopt::ManifestError& e) {
          EXPECT_EQ(std::string(e.what()),
                    dir_.string() + " has no manifest.json; compile it with `eeopt compile`");
          throw;
        }
      },
      eeopt::ManifestError);
  std::ofstream(dir_ / "manifest.json") << "{not json";
  try {
    eeopt::Program::load(dir_.string() + "/");
    FAIL() << "loaded";
  } catch (const eeopt::ManifestError& e) {
    EXPECT_EQ(std::string(e.what()).rfind((dir_ / "manifest.json").string() +
                                              " is not valid JSON (", 0), 0u) << e.what();
  }
  try {
    eeopt::Program::load(dir_ / "nope");
    FAIL() << "loaded";
  } catch (const eeopt::ManifestError& e) {
    EXPECT_EQ(std::string(e.what()), (dir_ / "nope").string() +
                                         " is not a program directory; compile one with "
                                         "`eeopt compile`");
  }
}

// Hand-written protobuf: the few ONNX fields the scan reads.
std::string varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7f) | 0x80);
  return out + static_cast<char>(v);
}
std::string field(uint64_t number, const std::string& bytes) {
  return varint(number << 3 | 2) + varint(bytes.size()) + bytes;
}
std::string int_field(uint64_t number, uint64_t value) {
  return varint(number << 3) + varint(value);
}
/// TensorProto: name 8, raw_data 9, external_data 13 (key 1, value 2), data_location 14.
std::string tensor_proto(const std::string& name, bool external) {
  std::string t = field(8, name) + int_field(2, 1);  // data_type FLOAT
  if (!external) return t + field(9, std::string(16, '\0'));
  return t + field(13, field(1, "location") + field(2, "weights.bin")) + int_field(14, 1);
}
/// ModelProto{ir_version 1, graph 7{initializer 5, node 1{attribute 5{g 6{initializer 5}}}}}.
std::string model_proto(bool external_initializer, bool external_in_subgraph) {
  const std::string subgraph = field(5, tensor_proto("inner", external_in_subgraph));
  const std::string node = field(5, field(1, "then_branch") + field(6, subgraph));
  return int_field(1, 10) +
         field(7, field(1, node) + field(5, tensor_proto("w", external_initializer)));
}

TEST(OnnxScan, FindsExternalDataAtAnyDepth) {
  using eeopt::detail::external_data_tensors;
  EXPECT_TRUE(external_data_tensors(model_proto(false, false)).empty());
  EXPECT_EQ(external_data_tensors(model_proto(true, false)), std::vector<std::string>{"w"});
  EXPECT_EQ(external_data_tensors(model_proto(false, true)), std::vector<std::string>{"inner"});
  // data_location alone marks it, with no external_data entries
  const std::string located = field(8, "v") + int_field(14, 1);
  EXPECT_EQ(external_data_tensors(field(7, field(5, located))), std::vector<std::string>{"v"});
  EXPECT_THROW(external_data_tensors("hello, world"), eeopt::detail::MalformedModel);
  EXPECT_THROW(external_data_tensors(field(7, "xy").substr(0, 3)), eeopt::detail::MalformedModel);
  // an attribute's subgraph's node's attribute ..., nested past protobuf's depth limit
  std::string attr = field(5, tensor_proto("d", true));
  for (int i = 0; i < 10; ++i) attr = field(6, field(1, field(5, attr)));
  EXPECT_EQ(external_data_tensors(field(7, field(1, field(5, attr)))),
            std::vector<std::string>{"d"});
  for (int i = 0; i < 40; ++i) attr = field(6, field(1, field(5, attr)));
  EXPECT_THROW(external_data_tensors(field(7, field(1, field(5, attr)))),
               eeopt::detail::MalformedModel);
}

TEST_F(ManifestTest, RefusesAnOnnxStageWithExternalData) {
  manifest_["backend"] = "onnxruntime";
  const std::string bytes = model_proto(true, false);
  std::ofstream(dir_ / "stage0.onnx", std::ios::binary) << bytes;
  manifest_["stages"][0]["sha256"] = eeopt::detail::sha256_hex(bytes);
  EXPECT_EQ(load_error(), "stage 0 file stage0.onnx keeps tensor 'w' in an external data file, "
                          "which the program's sha256 does not cover; eeopt never writes "
                          "external data, so the program was modified: recompile it");
  const std::string junk = "not really onnx";
  std::ofstream(dir_ / "stage0.onnx", std::ios::binary) << junk;
  manifest_["stages"][0]["sha256"] = eeopt::detail::sha256_hex(junk);
  EXPECT_EQ(load_error().rfind("stage 0 file stage0.onnx is not a valid ONNX model (", 0), 0u);
}

TEST(Sha256, MatchesTheStandardTestVector) {
  EXPECT_EQ(eeopt::detail::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Repr, QuotesLikePython) {
  EXPECT_EQ(eeopt::detail::repr("x"), "'x'");
  EXPECT_EQ(eeopt::detail::repr("it's"), "\"it's\"");
  EXPECT_EQ(eeopt::detail::repr("a\\b\n"), "'a\\\\b\\n'");
}

}  // namespace
