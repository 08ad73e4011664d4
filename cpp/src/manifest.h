// The compiled program's schema: parse and verify manifest.json (internal; mirrors
// eeopt/manifest.py, with the same ManifestError messages).
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "eeopt/program.h"

namespace eeopt::detail {

constexpr int kSchemaVersion = 1;
constexpr const char* kManifestName = "manifest.json";

struct GateSpec {
  std::string policy;
  double threshold = 0.0;
};

struct StageSpec {
  int index = 0;
  std::string file;
  std::string sha256;
  std::string exit_output;
  std::vector<TensorSpec> inputs;    ///< what the stage reads (the threshold is not among them)
  std::vector<TensorSpec> produces;  ///< carried tensors it computes for later stages
  std::vector<std::string> carry_after;  ///< every tensor alive after it: kept and compacted
  std::string logits;
  std::optional<std::string> decision;
  std::optional<std::string> threshold_input;
  std::optional<GateSpec> gate;
};

/// The sequence axis a runtime may trim (Python's SequenceSpec): after each compaction every
/// tensor in ``axes`` is cut along its axis to the longest remaining row, as ``mask`` (a
/// [batch, seq] input of 1 = token, 0 = right padding) measures it.
struct SequenceSpec {
  std::string mask;
  std::map<std::string, int> axes;
};

struct Manifest {
  int schema_version = kSchemaVersion;
  std::string eeopt_version;
  std::string backend;
  std::string backend_version;
  int64_t onnx_opset = 0;
  std::vector<TensorSpec> inputs;
  int64_t num_classes = 0;
  std::vector<StageSpec> stages;
  std::optional<SequenceSpec> sequence;
};

/// ``dir`` as Python's str(Path(dir)) prints it (no trailing slash).
std::string display(const std::filesystem::path& dir);

/// Parses manifest.json text; throws ManifestError naming the field.
Manifest parse_manifest(const std::string& text, const std::filesystem::path& source);

/// Reads ``dir``/manifest.json and parses it (does not touch the stage files).
Manifest read_manifest(const std::filesystem::path& dir);

/// ``dir / name``, refusing anything that leaves ``dir`` (.., absolute, symlinks).
std::filesystem::path resolve_in_dir(const std::filesystem::path& dir, const std::string& name);

/// Reads every stage file, checking it stays inside ``dir`` and matches its sha256; returns
/// the bytes (so what is run is exactly what was verified).
std::vector<std::string> read_stage_files(const std::filesystem::path& dir, const Manifest& m);

/// Lower-case hex SHA-256 of ``bytes``.
std::string sha256_hex(const std::string& bytes);

}  // namespace eeopt::detail
