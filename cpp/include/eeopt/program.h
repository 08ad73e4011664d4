// A compiled early-exit program: one ONNX Runtime session per stage, run with per-sample exits.
// Mirrors eeopt/runtime.py (Program.run) and eeopt/manifest.py (load and verify).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "eeopt/errors.h"
#include "eeopt/tensor.h"

namespace eeopt {

/// One dimension of a TensorSpec: a fixed size, a symbolic name such as "N", or unknown.
struct Dim {
  std::optional<int64_t> size;  ///< set: a fixed size
  std::string symbol;           ///< non-empty: a symbolic dimension
};

/// A tensor crossing a stage boundary, as the manifest records it.
struct TensorSpec {
  std::string name;
  std::string dtype;               ///< numpy name, e.g. "float32"
  std::vector<Dim> shape;
  std::optional<int> batch_axis;   ///< the axis compaction indexes; empty: batch-independent
  /// "x float32[N, 1, 28, 28]", as eeopt's Python side prints it.
  std::string describe() const;
};

/// Each row's logits at the exit where it left, and that exit, in the original row order.
struct Result {
  int64_t rows = 0;
  int64_t num_classes = 0;
  std::vector<float> logits;   ///< [rows, num_classes], row-major
  std::vector<int64_t> exits;  ///< [rows], 0-based; the final classifier is num_exits - 1
  /// argmax of a row's logits.
  int64_t prediction(int64_t row) const;
};

/// Where a run spent its time: one entry per stage it ran (it stops once no row remains).
struct RunStats {
  std::vector<double> session_seconds;  ///< time inside each stage's Ort::Session::Run
  std::vector<int64_t> rows;            ///< rows fed to each stage
  std::vector<int64_t> lengths;         ///< the sequence length each stage saw (0: no trimming)
};

/// Input name -> tensor. Views borrow the caller's memory for the duration of run().
using Inputs = std::map<std::string, TensorView>;

class Program {
 public:
  /// Loads and verifies a program directory: manifest.json (schema version, field types), the
  /// sha256 of every stage file, no path leaving the directory (symlinks included). Throws
  /// ManifestError naming the mismatch. ``threads`` sizes the process-wide ONNX Runtime pool
  /// (0: one thread per physical core); it is created once, by the first load (see
  /// global_threads()), and std::nullopt keeps whatever pool exists. ``trim_padding``: for a
  /// program with a sequence axis (manifest "sequence"), cut right padding to the longest
  /// remaining row at the start and after every compaction (the same exits and logits; inputs
  /// must then be right-padded, or run() throws DataError).
  static Program load(const std::filesystem::path& dir, std::optional<int> threads = {},
                      bool trim_padding = true);

  /// Runs with per-sample exits. ``thresholds`` overrides the compiled ones for this call, one
  /// per gated exit (a value above 1 disables that exit). Validates the inputs (names, dtype,
  /// rank, fixed dims, batch agreement) and throws DataError / UsageError with one line.
  /// Safe to call from several threads at once. ``stats``, if given, receives the timings.
  Result run(const Inputs& inputs,
             const std::optional<std::vector<float>>& thresholds = std::nullopt,
             RunStats* stats = nullptr) const;
  /// The same, for a program with a single input.
  Result run(const TensorView& x,
             const std::optional<std::vector<float>>& thresholds = std::nullopt,
             RunStats* stats = nullptr) const;

  const std::filesystem::path& path() const;
  const std::vector<TensorSpec>& inputs() const;
  int num_exits() const;
  int64_t num_classes() const;
  /// The compiled thresholds, one per gated exit.
  const std::vector<float>& thresholds() const;
  /// The source model's output name of each exit the program kept: a row with exits[i] == k
  /// left at the model output exit_names()[k] (k no longer numbers the model's own exits after
  /// the planner dropped some).
  const std::vector<std::string>& exit_names() const;
  /// Whether runs cut right padding (a program with a sequence axis, loaded to trim).
  bool trims_padding() const;

  Program(Program&&) noexcept;
  Program& operator=(Program&&) noexcept;
  ~Program();

 private:
  struct Impl;
  explicit Program(std::unique_ptr<const Impl> impl);
  std::unique_ptr<const Impl> impl_;
};

/// The size of the process-wide ONNX Runtime intra-op pool (0: one per physical core), or
/// std::nullopt before the first Program::load.
std::optional<int> global_threads();

}  // namespace eeopt
