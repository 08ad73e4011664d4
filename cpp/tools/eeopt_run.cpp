// eeopt_run: run a compiled program on .npy inputs, or time it (--bench).
//
//   eeopt_run PROGRAM --input NAME=FILE.npy [--input ...] --logits OUT.npy --exits OUT.npy
//             [--threads N] [--thresholds T0,T1,...]
//   eeopt_run PROGRAM --input NAME=FILE.npy [...] --bench RUNS [--batch B] [--warmup W] [...]
//
// Errors print one line on stderr and exit 2 (usage) or 1 (anything else); nothing is written
// unless the whole run succeeded (both outputs go to temporary names and are renamed at the end).
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eeopt/npy.h"
#include "eeopt/program.h"

namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "usage: eeopt_run PROGRAM --input NAME=FILE.npy [--input NAME=FILE.npy ...]\n"
    "                 --logits OUT.npy --exits OUT.npy [--threads N] [--thresholds T0,T1,...]\n"
    "       eeopt_run PROGRAM --input NAME=FILE.npy [...] --bench RUNS [--batch B] [--warmup W]\n"
    "       (either form: [--no-trim])\n"
    "\n"
    "Runs a compiled early-exit program with per-sample exits. Writes OUT logits [N, C] float32\n"
    "and exits [N] int64 (0-based; the final classifier is the last exit) as .npy files.\n"
    "--thresholds overrides the compiled ones, one per gated exit (above 1 disables an exit).\n"
    "--threads sizes ONNX Runtime's intra-op pool (default 0: one per physical core).\n"
    "--no-trim keeps right padding (a text program otherwise cuts it to the longest row).\n"
    "--bench times RUNS calls on consecutive chunks of B rows (default: all rows) after W\n"
    "warm-up calls (default 20) and prints per-call timings as JSON instead of writing files.\n";

struct Args {
  std::string program;
  std::vector<std::pair<std::string, std::string>> inputs;  // name, file
  std::string logits, exits;
  std::optional<int> threads;
  std::optional<std::vector<float>> thresholds;
  int bench = 0, batch = 0, warmup = 20;
  bool trim = true;
};

long parse_int(const std::string& flag, const std::string& text, long min) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno || v < min) {
    throw eeopt::UsageError(flag + " expects an integer >= " + std::to_string(min) + ", got '" +
                            text + "'");
  }
  return v;
}

/// "0.9,0.8" -> {0.9f, 0.8f}; blank parts are skipped, as eeopt's Python command line does.
std::vector<float> parse_thresholds(const std::string& text) {
  const auto bad = [&] {
    return eeopt::UsageError("--thresholds expects comma-separated numbers, e.g. 0.9,0.8; got '" +
                             text + "'");
  };
  std::vector<float> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string part = text.substr(start, comma - start);
    start = comma + 1;
    if (part.find_first_not_of(" \t") == std::string::npos) continue;
    char* end = nullptr;
    const double v = std::strtod(part.c_str(), &end);
    while (*end == ' ' || *end == '\t') ++end;
    if (*end != '\0') throw bad();
    out.push_back(static_cast<float>(v));
  }
  if (out.empty()) throw bad();
  return out;
}

Args parse_args(int argc, char** argv) {
  Args a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw eeopt::UsageError(std::string(argv[i]) + " expects a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--input") {
      const std::string v = value(i);
      const auto eq = v.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) {
        throw eeopt::UsageError("--input expects NAME=FILE.npy, got '" + v + "'");
      }
      a.inputs.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else if (arg == "--logits") {
      a.logits = value(i);
    } else if (arg == "--exits") {
      a.exits = value(i);
    } else if (arg == "--threads") {
      a.threads = static_cast<int>(parse_int(arg, value(i), 0));
    } else if (arg == "--thresholds") {
      a.thresholds = parse_thresholds(value(i));
    } else if (arg == "--no-trim") {
      a.trim = false;
    } else if (arg == "--bench") {
      a.bench = static_cast<int>(parse_int(arg, value(i), 1));
    } else if (arg == "--batch") {
      a.batch = static_cast<int>(parse_int(arg, value(i), 1));
    } else if (arg == "--warmup") {
      a.warmup = static_cast<int>(parse_int(arg, value(i), 0));
    } else if (arg.rfind("-", 0) == 0) {
      throw eeopt::UsageError("unknown option " + arg);
    } else if (a.program.empty()) {
      a.program = arg;
    } else {
      throw eeopt::UsageError("unexpected argument '" + arg + "'");
    }
  }
  if (a.program.empty()) throw eeopt::UsageError("missing PROGRAM (a compiled program directory)");
  if (a.inputs.empty()) throw eeopt::UsageError("missing --input NAME=FILE.npy");
  if (a.bench == 0) {
    if (a.logits.empty() || a.exits.empty()) {
      throw eeopt::UsageError("--logits OUT.npy and --exits OUT.npy are both required");
    }
    for (const auto* out : {&a.logits, &a.exits}) {
      if (fs::path(*out).extension() != ".npy") {
        throw eeopt::UsageError("output " + *out + " must end in .npy");
      }
    }
    if (fs::absolute(a.logits).lexically_normal() == fs::absolute(a.exits).lexically_normal()) {
      throw eeopt::UsageError("--logits and --exits must be different files");
    }
  } else if (!a.logits.empty() || !a.exits.empty()) {
    throw eeopt::UsageError("--bench prints timings; it does not take --logits/--exits");
  }
  return a;
}

/// Writes every (path, tensor) to a temporary sibling, then renames them all into place.
void write_all(const std::vector<std::pair<std::string, eeopt::TensorView>>& outputs) {
  std::vector<std::pair<std::string, fs::path>> temps;
  try {
    for (const auto& [path, tensor] : outputs) {
      const fs::path dest(path);
      const fs::path dir = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
      std::string pattern = (dir / ("." + dest.filename().string() + ".tmp-XXXXXX")).string();
      const int fd = mkstemp(pattern.data());
      if (fd < 0) throw eeopt::DataError("cannot write " + path + ": " + std::strerror(errno));
      close(fd);
      temps.emplace_back(path, pattern);
      eeopt::write_npy(pattern, tensor);
    }
    for (const auto& [path, tmp] : temps) fs::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    for (const auto& [path, tmp] : temps) fs::remove(tmp, ec);
    throw;
  }
}

std::map<std::string, eeopt::Tensor> read_inputs(const Args& a) {
  std::map<std::string, eeopt::Tensor> data;
  for (const auto& [name, file] : a.inputs) {
    if (data.count(name)) throw eeopt::UsageError("--input " + name + " is given twice");
    data.emplace(name, eeopt::read_npy(file));
  }
  return data;
}

eeopt::Inputs views(const std::map<std::string, eeopt::Tensor>& data) {
  eeopt::Inputs in;
  for (const auto& [name, t] : data) in.emplace(name, t.view());
  return in;
}

int run(const Args& a) {
  const auto program = eeopt::Program::load(a.program, a.threads, a.trim);
  const auto data = read_inputs(a);
  const eeopt::Result res = program.run(views(data), a.thresholds);
  write_all({{a.logits, eeopt::TensorView::of(res.logits.data(), {res.rows, res.num_classes})},
             {a.exits, eeopt::TensorView::of(res.exits.data(), {res.rows})}});
  return 0;
}

/// Consecutive chunks of ``batch`` rows of every input, sliced along each one's batch axis.
std::vector<std::map<std::string, eeopt::Tensor>> chunks(
    const eeopt::Program& program, const std::map<std::string, eeopt::Tensor>& data, int64_t rows,
    int64_t batch) {
  std::vector<std::map<std::string, eeopt::Tensor>> out;
  for (int64_t start = 0; start + batch <= rows; start += batch) {
    std::vector<int64_t> index(static_cast<std::size_t>(batch));
    for (int64_t i = 0; i < batch; ++i) index[static_cast<std::size_t>(i)] = start + i;
    std::map<std::string, eeopt::Tensor> chunk;
    for (const auto& spec : program.inputs()) {
      const eeopt::Tensor& t = data.at(spec.name);
      chunk.emplace(spec.name, spec.batch_axis ? eeopt::take(t, *spec.batch_axis, index) : t);
    }
    out.push_back(std::move(chunk));
  }
  return out;
}

int bench(const Args& a) {
  const auto program = eeopt::Program::load(a.program, a.threads, a.trim);
  const auto data = read_inputs(a);
  const int64_t rows = program.run(views(data), a.thresholds).rows;  // validates the inputs
  const int64_t batch = a.batch ? a.batch : rows;
  if (batch > rows || rows == 0) {
    throw eeopt::UsageError("--batch " + std::to_string(batch) + " needs at least that many " +
                            "input rows; the inputs have " + std::to_string(rows));
  }
  const auto parts = chunks(program, data, rows, batch);
  std::vector<eeopt::Inputs> feeds;
  for (const auto& c : parts) feeds.push_back(views(c));
  for (int i = 0; i < a.warmup; ++i) program.run(feeds[i % feeds.size()], a.thresholds);
  nlohmann::json total = nlohmann::json::array(), session = nlohmann::json::array(),
                 stages = nlohmann::json::array(), lengths = nlohmann::json::array();
  std::vector<int64_t> exit_counts(static_cast<std::size_t>(program.num_exits()), 0);
  eeopt::RunStats stats;
  for (int r = 0; r < a.bench; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const eeopt::Result res = program.run(feeds[r % feeds.size()], a.thresholds, &stats);
    const double us = std::chrono::duration<double, std::micro>(
                          std::chrono::steady_clock::now() - t0).count();
    double in_session = 0.0;
    for (double s : stats.session_seconds) in_session += s * 1e6;
    total.push_back(us);
    session.push_back(in_session);
    stages.push_back(stats.session_seconds.size());
    lengths.push_back(stats.lengths);
    for (int64_t e : res.exits) ++exit_counts[static_cast<std::size_t>(e)];
  }
  nlohmann::json out = {
      {"program", a.program}, {"threads", a.threads.value_or(0)}, {"batch", batch},
      {"runs", a.bench},      {"warmup", a.warmup},               {"chunks", feeds.size()},
      {"num_exits", program.num_exits()}, {"exit_counts", exit_counts}, {"total_us", total},
      {"session_us", session}, {"stages_run", stages}, {"stage_lengths", lengths}};
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    return args.bench ? bench(args) : run(args);
  } catch (const eeopt::UsageError& e) {
    std::cerr << "eeopt_run: error: " << e.what() << " (see eeopt_run --help)\n";
    return 2;
  } catch (const eeopt::Error& e) {
    std::cerr << "eeopt_run: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "eeopt_run: internal error: " << e.what() << "\n";
    return 1;
  }
}
