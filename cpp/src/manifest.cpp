#include "manifest.h"

#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "inputs.h"
#include "onnx_scan.h"
#include "text.h"

namespace eeopt::detail {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

enum class Kind { Int, Number, String, Array, Object };

bool is(const json& v, Kind kind) {
  switch (kind) {
    case Kind::Int: return v.is_number_integer();
    case Kind::Number: return v.is_number();
    case Kind::String: return v.is_string();
    case Kind::Array: return v.is_array();
    case Kind::Object: return v.is_object();
  }
  return false;
}

[[noreturn]] void fail(const std::string& msg) { throw ManifestError("manifest: " + msg); }

/// ``d[key]``, which must exist and be of ``kind`` (Python's _req).
const json& req(const json& d, const std::string& key, Kind kind, const std::string& where) {
  const auto it = d.find(key);
  if (it == d.end()) fail(where + " is missing the field " + repr(key) + "; recompile");
  if (!is(*it, kind)) fail(where + "." + key + " has the wrong type; recompile");
  return *it;
}

/// An optional string field (absent or null: empty).
std::optional<std::string> opt_str(const json& d, const std::string& key,
                                   const std::string& where) {
  const auto it = d.find(key);
  if (it == d.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) fail(where + "." + key + " has the wrong type; recompile");
  return it->get<std::string>();
}

/// A JSON scalar as Python's repr() prints the value json.loads made of it.
std::string py_repr(const json& v) {
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_string()) return repr(v.get<std::string>());
  return v.dump();
}

TensorSpec parse_tensor(const json& d, const std::string& where) {
  if (!d.is_object()) fail(where + " must be an object; recompile");
  TensorSpec t;
  for (const json& dim : req(d, "shape", Kind::Array, where)) {
    Dim out;
    if (dim.is_number_integer()) {
      out.size = dim.get<int64_t>();
    } else if (dim.is_string()) {
      out.symbol = dim.get<std::string>();
    } else if (!dim.is_null()) {
      fail(where + ".shape holds " + py_repr(dim) + "; recompile");
    }
    t.shape.push_back(out);
  }
  const auto axis = d.find("batch_axis");
  if (axis == d.end()) {
    t.batch_axis = 0;
  } else if (axis->is_number_integer()) {
    t.batch_axis = axis->get<int>();
  } else if (!axis->is_null()) {
    fail(where + ".batch_axis must be an int or null; recompile");
  }
  t.name = req(d, "name", Kind::String, where).get<std::string>();
  if (t.batch_axis && (*t.batch_axis < 0 || *t.batch_axis >= static_cast<int>(t.shape.size()))) {
    fail(where + " " + repr(t.name) + " has batch_axis " + std::to_string(*t.batch_axis) +
         ", but its shape has " + std::to_string(t.shape.size()) + " axes; recompile");
  }
  t.dtype = req(d, "dtype", Kind::String, where).get<std::string>();
  return t;
}

std::vector<TensorSpec> parse_tensors(const json& list, const std::string& where) {
  std::vector<TensorSpec> out;
  for (const json& t : list) out.push_back(parse_tensor(t, where));
  return out;
}

StageSpec parse_stage(const json& d, int i) {
  const std::string where = "stages[" + std::to_string(i) + "]";
  if (!d.is_object()) fail(where + " must be an object; recompile");
  StageSpec s;
  const auto gate = d.find("gate");
  if (gate != d.end() && !gate->is_null()) {
    if (!gate->is_object()) fail(where + ".gate must be an object or null; recompile");
    GateSpec g;
    g.policy = req(*gate, "policy", Kind::String, where + ".gate").get<std::string>();
    g.threshold = req(*gate, "threshold", Kind::Number, where + ".gate").get<double>();
    const std::string rule = check_run_threshold(g.policy, static_cast<float>(g.threshold));
    if (!rule.empty()) {
      std::ostringstream v;
      v << g.threshold;  // as Python's :g
      fail(where + ".gate.threshold " + v.str() + " is out of range for policy " + g.policy +
           ": " + rule + "; recompile");
    }
    req(*gate, "features", Kind::Array, where + ".gate");
    s.gate = g;
  }
  s.index = req(d, "index", Kind::Int, where).get<int>();
  s.file = req(d, "file", Kind::String, where).get<std::string>();
  s.sha256 = req(d, "sha256", Kind::String, where).get<std::string>();
  s.exit_output = req(d, "exit_output", Kind::String, where).get<std::string>();
  s.inputs = parse_tensors(req(d, "inputs", Kind::Array, where), where + ".inputs");
  s.produces = parse_tensors(req(d, "produces", Kind::Array, where), where + ".produces");
  for (const json& name : req(d, "carry_after", Kind::Array, where)) {
    if (!name.is_string()) fail(where + ".carry_after has the wrong type; recompile");
    s.carry_after.push_back(name.get<std::string>());
  }
  s.logits = req(d, "logits", Kind::String, where).get<std::string>();
  s.decision = opt_str(d, "decision", where);
  s.threshold_input = opt_str(d, "threshold_input", where);
  return s;
}

/// What Python finds only when it runs: every tensor a stage reads or carries on is alive.
void check_dataflow(const Manifest& m) {
  std::set<std::string> live;
  for (const auto& t : m.inputs) live.insert(t.name);
  for (const auto& s : m.stages) {
    const std::string where = "stages[" + std::to_string(s.index) + "]";
    for (const auto& t : s.inputs) {
      if (!live.count(t.name)) {
        fail(where + " reads " + repr(t.name) + ", which no earlier stage carries; recompile");
      }
    }
    for (const auto& t : s.produces) live.insert(t.name);
    for (const auto& name : s.carry_after) {
      if (!live.count(name)) {
        fail(where + ".carry_after names " + repr(name) +
             ", which is neither alive nor produced there; recompile");
      }
    }
    live = std::set<std::string>(s.carry_after.begin(), s.carry_after.end());
  }
}

/// The optional "sequence" field, checked against the tensors it names (Python's _sequence).
std::optional<SequenceSpec> parse_sequence(const json& d, const Manifest& m) {
  const auto it = d.find("sequence");
  if (it == d.end() || it->is_null()) return std::nullopt;
  if (!it->is_object()) fail("sequence must be an object or absent; recompile");
  SequenceSpec seq;
  seq.mask = req(*it, "mask", Kind::String, "sequence").get<std::string>();
  const json& axes = req(*it, "axes", Kind::Object, "sequence");
  std::map<std::string, const TensorSpec*> tensors;
  for (const auto& t : m.inputs) tensors[t.name] = &t;
  for (const auto& s : m.stages) {
    for (const auto& t : s.inputs) tensors[t.name] = &t;
    for (const auto& t : s.produces) tensors[t.name] = &t;
  }
  const TensorSpec* mask = nullptr;
  for (const auto& t : m.inputs) {
    if (t.name == seq.mask) mask = &t;
  }
  if (!mask || mask->shape.size() != 2 || mask->batch_axis != 0) {
    fail("sequence.mask " + repr(seq.mask) + " is not a [batch, seq] input; recompile");
  }
  for (const auto& [name, axis] : axes.items()) {
    const auto t = tensors.find(name);
    if (t == tensors.end()) {
      fail("sequence.axes names " + repr(name) + ", which is no tensor of the program; "
           "recompile");
    }
    const int rank = static_cast<int>(t->second->shape.size());
    if (!axis.is_number_integer() || axis.get<int64_t>() < 0 || axis.get<int64_t>() >= rank ||
        t->second->batch_axis == axis.get<int>()) {
      fail("sequence.axes gives " + repr(name) + " axis " + py_repr(axis) +
           ", which is not one of its non-batch axes; recompile");
    }
    seq.axes[name] = axis.get<int>();
  }
  const auto mask_axis = seq.axes.find(seq.mask);
  if (mask_axis == seq.axes.end() || mask_axis->second != 1) {
    fail("sequence.axes must give the mask axis 1; recompile");
  }
  return seq;
}

}  // namespace

std::string display(const fs::path& dir) {
  std::string s = dir.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s.empty() ? "." : s;
}

Manifest parse_manifest(const std::string& text, const fs::path& source) {
  json d;
  try {
    d = json::parse(text);
  } catch (const json::parse_error& e) {
    throw ManifestError(display(source) + " is not valid JSON (" + e.what() + "); recompile");
  }
  if (!d.is_object()) fail("the top level must be a JSON object; recompile");
  const auto version = d.find("schema_version");
  const json v = version == d.end() ? json() : *version;
  if (!v.is_number() || v.get<double>() != kSchemaVersion) {
    fail("schema_version " + py_repr(v) + " is not supported by this eeopt (it reads " +
         std::to_string(kSchemaVersion) + "); recompile the program with this version");
  }
  Manifest m;
  const json& stages = req(d, "stages", Kind::Array, "manifest");
  for (std::size_t i = 0; i < stages.size(); ++i) {
    m.stages.push_back(parse_stage(stages[i], static_cast<int>(i)));
  }
  if (m.stages.size() < 2) fail("a program needs at least 2 stages; recompile");
  for (std::size_t i = 0; i < m.stages.size(); ++i) {
    const StageSpec& s = m.stages[i];
    const std::string where = "stages[" + std::to_string(i) + "]";
    if (s.index != static_cast<int>(i)) {
      fail(where + " has index " + std::to_string(s.index) + "; recompile");
    }
    const bool last = i + 1 == m.stages.size();
    if (last != !s.gate.has_value() || (!last && (!s.decision || !s.threshold_input))) {
      fail(where + " must " + (last ? "not " : "") + "carry a gate; recompile");
    }
  }
  m.eeopt_version = req(d, "eeopt_version", Kind::String, "manifest").get<std::string>();
  m.backend = req(d, "backend", Kind::String, "manifest").get<std::string>();
  m.backend_version = req(d, "backend_version", Kind::String, "manifest").get<std::string>();
  m.onnx_opset = req(d, "onnx_opset", Kind::Int, "manifest").get<int64_t>();
  m.inputs = parse_tensors(req(d, "inputs", Kind::Array, "manifest"), "inputs");
  m.num_classes = req(d, "num_classes", Kind::Int, "manifest").get<int64_t>();
  check_dataflow(m);
  m.sequence = parse_sequence(d, m);
  return m;
}

Manifest read_manifest(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw ManifestError(display(dir) + " is not a program directory; compile one with "
                        "`eeopt compile`");
  }
  const fs::path mpath = fs::path(display(dir)) / kManifestName;
  if (!fs::is_regular_file(mpath, ec)) {
    throw ManifestError(display(dir) + " has no " + kManifestName +
                        "; compile it with `eeopt compile`");
  }
  std::ifstream in(mpath, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return parse_manifest(text.str(), mpath);
}

fs::path resolve_in_dir(const fs::path& dir, const std::string& name) {
  if (name.empty() || fs::path(name).is_absolute()) {
    throw ManifestError("manifest: file " + repr(name) + " is not a relative path inside " +
                        display(dir));
  }
  std::error_code ec;
  const fs::path root = fs::weakly_canonical(fs::absolute(dir), ec);
  const fs::path path = fs::weakly_canonical(root / name, ec);
  const auto rel = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  const bool inside = !ec && rel.first == root.end() && rel.second != path.end() &&
                      !rel.second->empty();
  if (!inside) {
    throw ManifestError("manifest: file " + repr(name) + " points outside the program directory");
  }
  return path;
}

namespace {

/// An ONNX stage must hold all its data: ONNX Runtime would resolve an external data file
/// against the current directory, outside what the sha256 covers.
void check_self_contained(const std::string& bytes, const std::string& where) {
  std::vector<std::string> external;
  try {
    external = external_data_tensors(bytes);
  } catch (const MalformedModel& e) {
    throw ManifestError(where + " is not a valid ONNX model (" + e.what() + "); recompile");
  }
  if (external.empty()) return;
  std::string names;
  for (std::size_t i = 0; i < external.size() && i < 3; ++i) {
    names += (i ? ", " : "") + repr(external[i]);
  }
  if (external.size() > 3) names += " ...";
  throw ManifestError(where + " keeps tensor " + names + " in an external data file, which the "
                      "program's sha256 does not cover; eeopt never writes external data, so "
                      "the program was modified: recompile it");
}

}  // namespace

std::vector<std::string> read_stage_files(const fs::path& dir, const Manifest& m) {
  std::vector<std::string> files;
  for (const StageSpec& s : m.stages) {
    const fs::path path = resolve_in_dir(dir, s.file);
    const std::string where = "stage " + std::to_string(s.index) + " file " + s.file;
    std::error_code ec;
    std::ifstream in(path, std::ios::binary);
    if (!fs::is_regular_file(path, ec) || !in) {
      throw ManifestError(where + " is missing from " + display(dir) + "; recompile");
    }
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (sha256_hex(bytes) != s.sha256) {
      throw ManifestError(where + " does not match its sha256 in the manifest (modified or "
                          "corrupted); recompile the program");
    }
    if (m.backend == "onnxruntime") check_self_contained(bytes, where);
    files.push_back(std::move(bytes));
  }
  return files;
}

std::string sha256_hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    throw Error("OpenSSL could not compute a SHA-256 digest");
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 0xf];
  }
  return out;
}

}  // namespace eeopt::detail
