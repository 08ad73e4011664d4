#include "ort_env.h"

#include <iostream>
#include <mutex>
#include <string>

#include "eeopt/program.h"

namespace eeopt {
namespace {

std::mutex g_mutex;
std::shared_ptr<Ort::Env> g_env;  // Programs hold copies: the Env outlives every session
std::optional<int> g_threads;

}  // namespace

std::optional<int> global_threads() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_threads;
}

namespace detail {

std::shared_ptr<Ort::Env> shared_env(std::optional<int> threads) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!threads && g_env) return g_env;  // no preference: keep the pool the process has
  const int want = threads.value_or(0);
  if (want < 0) throw DataError("threads must be >= 0, got " + std::to_string(want));
  if (!g_env) {
    Ort::ThreadingOptions pools;
    pools.SetGlobalIntraOpNumThreads(want);
    pools.SetGlobalInterOpNumThreads(1);
    g_env = std::make_shared<Ort::Env>(pools, ORT_LOGGING_LEVEL_ERROR, "eeopt");
    g_threads = want;
  } else if (want != *g_threads) {
    std::cerr << "eeopt: warning: ONNX Runtime's global thread pool already has "
              << (*g_threads ? std::to_string(*g_threads) : "default") << " threads in this "
              << "process; ignoring threads=" << want << " (start a new process to change it)\n";
  }
  return g_env;
}

Ort::SessionOptions session_options() {
  Ort::SessionOptions so;
  so.DisablePerSessionThreads();
  so.SetLogSeverityLevel(3);
  so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
  return so;
}

}  // namespace detail
}  // namespace eeopt
