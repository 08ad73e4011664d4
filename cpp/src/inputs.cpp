#include "inputs.h"

#include <cmath>
#include <map>
#include <sstream>

#include "text.h"

namespace eeopt {

std::string TensorSpec::describe() const {
  std::vector<std::string> dims;
  for (const Dim& d : shape) {
    dims.push_back(d.size ? std::to_string(*d.size) : d.symbol.empty() ? "?" : d.symbol);
  }
  return name + " " + dtype + "[" + detail::join(dims, ", ") + "]";
}

namespace detail {
namespace {

std::string expected(const std::vector<TensorSpec>& specs) {
  std::vector<std::string> parts;
  for (const auto& s : specs) parts.push_back(s.describe());
  return join(parts, ", ");
}

}  // namespace

int64_t check_inputs(const std::vector<TensorSpec>& specs, const Inputs& inputs,
                     const std::string& what) {
  for (const auto& s : specs) {
    if (!inputs.count(s.name)) {
      throw DataError("missing input " + repr(s.name) + "; the " + what +
                      " expects: " + expected(specs));
    }
  }
  for (const auto& [name, view] : inputs) {  // std::map: the first unknown name, sorted
    bool known = false;
    for (const auto& s : specs) known = known || s.name == name;
    if (!known) {
      throw DataError("unknown input " + repr(name) + "; the " + what +
                      " expects: " + expected(specs));
    }
  }
  std::optional<int64_t> batch;
  std::map<std::string, int64_t> symbols;
  for (const auto& s : specs) {
    const TensorView& arr = inputs.at(s.name);
    const std::string name = repr(s.name);
    const std::string dtype = dtype_name(arr.dtype);
    if (dtype != s.dtype) {
      throw DataError("input " + name + " has dtype " + dtype + ", expected " +
                      s.dtype + "; convert it with .astype(np." + s.dtype + ")");
    }
    if (arr.shape.size() != s.shape.size()) {
      throw DataError("input " + name + " has shape " + shape_str(arr.shape) +
                      ", expected rank " + std::to_string(s.shape.size()) + ": " + s.describe());
    }
    for (std::size_t axis = 0; axis < arr.shape.size(); ++axis) {
      const int64_t got = arr.shape[axis];
      const Dim& want = s.shape[axis];
      if (s.batch_axis && static_cast<int>(axis) == *s.batch_axis) {
        if (!batch) {
          batch = got;
        } else if (got != *batch) {
          throw DataError("input " + name + " has batch size " + std::to_string(got) +
                          " but another input has " + std::to_string(*batch) +
                          "; all inputs must share the batch dimension");
        }
      } else if (want.size && got != *want.size) {
        throw DataError("input " + name + " has shape " + shape_str(arr.shape) + "; axis " +
                        std::to_string(axis) + " must be " + std::to_string(*want.size) + " (" +
                        s.describe() + ")");
      } else if (!want.size && !want.symbol.empty()) {
        const auto [it, fresh] = symbols.emplace(want.symbol, got);
        if (!fresh && it->second != got) {
          throw DataError("input " + name + " axis " + std::to_string(axis) + " is " +
                          std::to_string(got) + ", but dimension " + repr(want.symbol) + " is " +
                          std::to_string(it->second) + " in another input");
        }
      }
    }
    if (arr.data == nullptr && arr.numel() > 0) {
      throw DataError("input " + name + " has no data (a null pointer)");
    }
  }
  return batch.value_or(0);
}

std::string check_run_threshold(const std::string& policy, float t) {
  if (std::isnan(t)) return "a threshold must be a number, not NaN";
  if (policy == "maxprob" || policy == "margin") {
    return t > 0.0f ? "" : "each must be > 0 (above 1 disables the exit)";
  }
  if (policy == "jei" || policy == "gate-unit" || policy == "cost-sensitive" ||
      policy == "twin") {
    return t >= 0.0f ? "" : "each must be >= 0 (above 1 disables the exit)";
  }
  if (policy == "entropy") {
    return std::isinf(t) && t > 0 ? "each must be finite (below 0 disables the exit)" : "";
  }
  if (policy == "patience") return t >= 1.0f ? "" : "each must be >= 1 (inf disables the exit)";
  return "";  // a policy this runtime does not know: no range to hold it to
}

std::vector<float> resolve_thresholds(const std::vector<float>& compiled,
                                      const std::vector<std::string>& policies,
                                      const std::optional<std::vector<float>>& override) {
  if (!override) return compiled;
  if (override->size() != compiled.size()) {
    throw UsageError("the program has " + std::to_string(compiled.size()) + " gated exits; got " +
                     std::to_string(override->size()) + " thresholds");
  }
  for (size_t j = 0; j < override->size(); ++j) {
    const float t = (*override)[j];
    const std::string rule = check_run_threshold(policies.at(j), t);
    if (!rule.empty()) {
      std::ostringstream v;
      v << t;  // as Python's :g
      throw UsageError("thresholds value " + v.str() + " for exit " + std::to_string(j) +
                       " is out of range for policy " + policies.at(j) + ": " + rule);
    }
  }
  return *override;
}

}  // namespace detail
}  // namespace eeopt
