// Program: loads a compiled program and runs it with a per-sample exit (mirrors
// eeopt/runtime.py). After each stage the rows whose gate fired leave the batch; only the
// remaining rows go on, with their carried tensors compacted along each one's batch axis.
// Results come back in the original row order. No copy is made when no row leaves, and the run
// stops as soon as no row remains.
#include "eeopt/program.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <numeric>

#include "inputs.h"
#include "manifest.h"
#include "ort_env.h"
#include "text.h"
#include "values.h"

namespace eeopt {
namespace {

namespace fs = std::filesystem;

/// A tensor the runtime keeps alive after a stage, and the axis it is compacted along.
struct Carry {
  int slot = 0;
  std::optional<int> axis;
  std::string label;  // "stage 0 (stage0.onnx): carried tensor 'h'", for errors
};

struct Stage {
  detail::StageSpec spec;
  // Session::Run is thread-safe in ONNX Runtime; the C++ wrapper just is not const-qualified.
  mutable Ort::Session session{nullptr};
  std::vector<int> input_slots;                 // the stage's inputs, in feed order
  std::vector<std::pair<int, int>> produces;    // (slot, output index)
  std::vector<Carry> carry;
  std::vector<std::string> input_names, output_names;
  std::vector<const char*> input_ptrs, output_ptrs;
  std::string where;                            // "stage 1 (stage1.onnx)", for errors
  std::string logits_label, decision_label;     // made once: a run builds no strings
};

std::string first_line(const std::string& s) {
  const auto start = s.find_first_not_of(" \t\r\n");
  if (start == std::string::npos) return "unknown error";
  return s.substr(start, s.find('\n', start) - start);
}

/// One slot per tensor name, so a run indexes a vector instead of hashing names.
int slot_of(std::map<std::string, int>& slots, const std::string& name) {
  return slots.emplace(name, static_cast<int>(slots.size())).first->second;
}

}  // namespace

struct Program::Impl {
  fs::path path;
  detail::Manifest manifest;
  std::shared_ptr<Ort::Env> env;  // declared before the stages: destroyed after their sessions
  Ort::MemoryInfo memory{nullptr};
  std::vector<Stage> stages;
  std::vector<float> thresholds;
  std::vector<std::string> policies;  // each gated exit's
  std::vector<std::string> exit_names;  // each stage's exit_output
  std::vector<int> input_slots;   // the program's inputs, in manifest order
  int num_slots = 0;
  // padding re-trim (manifest "sequence"): each slot's sequence axis, and the mask input
  bool trim = false;
  std::vector<std::optional<int>> seq_axis;
  std::string mask;
};

namespace {

/// Each row's token count, after checking the mask is right padding (Python's
/// check_right_padding, same message).
std::vector<int64_t> row_lengths(const TensorView& mask, const std::string& name) {
  const int64_t n = mask.shape.at(0), t = mask.shape.at(1);
  const std::size_t size = dtype_size(mask.dtype);
  const auto* bytes = static_cast<const unsigned char*>(mask.data);
  std::vector<int64_t> lengths(static_cast<std::size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    bool padding = false;
    for (int64_t j = 0; j < t; ++j) {
      const unsigned char* e = bytes + static_cast<std::size_t>(i * t + j) * size;
      const bool token = std::any_of(e, e + size, [](unsigned char b) { return b != 0; });
      if (token && padding) {
        throw DataError("input " + detail::repr(name) + " row " + std::to_string(i) +
                        " has a token after padding: eeopt trims right padding, so pad on the "
                        "right (tokenizer padding_side='right'), or run without trimming "
                        "(trim_padding off)");
      }
      padding = padding || !token;
      lengths[static_cast<std::size_t>(i)] += token ? 1 : 0;
    }
  }
  return lengths;
}

std::vector<int64_t> first(int64_t count) {
  std::vector<int64_t> v(static_cast<std::size_t>(count));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

}  // namespace

Program::Program(std::unique_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Program::Program(Program&&) noexcept = default;
Program& Program::operator=(Program&&) noexcept = default;
Program::~Program() = default;

Program Program::load(const fs::path& dir, std::optional<int> threads, bool trim_padding) {
  auto p = std::make_unique<Impl>();
  p->path = dir;
  p->manifest = detail::read_manifest(dir);
  const std::vector<std::string> files = detail::read_stage_files(dir, p->manifest);
  const detail::Manifest& m = p->manifest;
  if (m.backend != "onnxruntime") {
    throw ManifestError(detail::display(dir) + " was compiled for backend " +
                        detail::repr(m.backend) + "; this runtime runs 'onnxruntime' programs");
  }
  // The compaction axis of every tensor: the last spec naming it wins (as in runtime.py).
  std::map<std::string, std::optional<int>> axes;
  for (const auto& t : m.inputs) axes[t.name] = t.batch_axis;
  for (const auto& s : m.stages) {
    for (const auto& t : s.inputs) axes[t.name] = t.batch_axis;
    for (const auto& t : s.produces) axes[t.name] = t.batch_axis;
  }
  std::map<std::string, int> slots;
  for (const auto& t : m.inputs) p->input_slots.push_back(slot_of(slots, t.name));
  for (const auto& s : m.stages) p->exit_names.push_back(s.exit_output);

  p->env = detail::shared_env(threads);
  p->memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  for (std::size_t k = 0; k < m.stages.size(); ++k) {
    Stage st;
    st.spec = m.stages[k];
    st.where = "stage " + std::to_string(k) + " (" + st.spec.file + ")";
    st.logits_label = st.where + ": logits " + detail::repr(st.spec.logits);
    if (st.spec.decision) {
      st.decision_label = st.where + ": decision " + detail::repr(*st.spec.decision);
    }
    for (const auto& t : st.spec.inputs) {
      st.input_slots.push_back(slot_of(slots, t.name));
      st.input_names.push_back(t.name);
    }
    if (st.spec.threshold_input) st.input_names.push_back(*st.spec.threshold_input);
    st.output_names.push_back(st.spec.logits);
    for (const auto& t : st.spec.produces) {
      int out = 0;
      if (t.name != st.spec.logits) {
        out = static_cast<int>(st.output_names.size());
        st.output_names.push_back(t.name);
      }
      st.produces.emplace_back(slot_of(slots, t.name), out);
    }
    if (st.spec.decision) st.output_names.push_back(*st.spec.decision);
    for (const auto& name : st.spec.carry_after) {
      const auto axis = axes.find(name);
      st.carry.push_back({slot_of(slots, name), axis == axes.end() ? 0 : axis->second,
                          st.where + ": carried tensor " + detail::repr(name)});
    }
    try {
      st.session = Ort::Session(*p->env, files[k].data(), files[k].size(),
                                detail::session_options());
    } catch (const Ort::Exception& e) {
      throw UnsupportedModelError("ONNX Runtime cannot load the model: " + first_line(e.what()));
    }
    if (st.spec.gate) {
      p->thresholds.push_back(static_cast<float>(st.spec.gate->threshold));
      p->policies.push_back(st.spec.gate->policy);
    }
    p->stages.push_back(std::move(st));
  }
  for (Stage& st : p->stages) {  // pointers into strings that no longer move
    for (const auto& n : st.input_names) st.input_ptrs.push_back(n.c_str());
    for (const auto& n : st.output_names) st.output_ptrs.push_back(n.c_str());
  }
  p->num_slots = static_cast<int>(slots.size());
  p->seq_axis.assign(static_cast<std::size_t>(p->num_slots), std::nullopt);
  if (m.sequence && trim_padding) {
    p->trim = true;
    p->mask = m.sequence->mask;
    for (const auto& [name, axis] : m.sequence->axes) {
      const auto slot = slots.find(name);
      if (slot != slots.end()) p->seq_axis[static_cast<std::size_t>(slot->second)] = axis;
    }
  }
  return Program(std::move(p));
}

Result Program::run(const Inputs& inputs, const std::optional<std::vector<float>>& thresholds,
                    RunStats* stats) const {
  const Impl& p = *impl_;
  const int64_t n = detail::check_inputs(p.manifest.inputs, inputs);
  const std::vector<float> thr = detail::resolve_thresholds(p.thresholds, p.policies, thresholds);
  const int64_t classes = p.manifest.num_classes;
  Result res;
  res.rows = n;
  res.num_classes = classes;
  res.logits.assign(static_cast<std::size_t>(n * classes), 0.0f);
  res.exits.assign(static_cast<std::size_t>(n), 0);
  if (stats) *stats = RunStats{};
  if (n == 0) return res;

  std::vector<Ort::Value> live;  // by slot; null where not alive
  live.reserve(static_cast<std::size_t>(p.num_slots));
  for (int i = 0; i < p.num_slots; ++i) live.emplace_back(nullptr);
  for (std::size_t i = 0; i < p.manifest.inputs.size(); ++i) {
    live[p.input_slots[i]] = detail::borrow(p.memory, inputs.at(p.manifest.inputs[i].name));
  }
  std::vector<int64_t> order(static_cast<std::size_t>(n));  // original row of each remaining row
  std::iota(order.begin(), order.end(), 0);
  std::vector<int64_t> lengths;  // padding re-trim: each original row's tokens
  int64_t length = 0;            // the sequence length the live tensors have
  if (p.trim) {
    const TensorView& mask = inputs.at(p.mask);
    lengths = row_lengths(mask, p.mask);
    length = mask.shape[1];
    const int64_t longest = std::max<int64_t>(
        1, *std::max_element(lengths.begin(), lengths.end()));
    if (longest < length) {  // every row is shorter than the padding: cut before stage 0
      for (std::size_t i = 0; i < p.manifest.inputs.size(); ++i) {
        const int slot = p.input_slots[i];
        if (const auto axis = p.seq_axis[static_cast<std::size_t>(slot)]) {
          live[slot] = detail::compact(live[slot], *axis, first(longest), length,
                                       "input " + detail::repr(p.manifest.inputs[i].name));
        }
      }
      length = longest;
    }
  }
  const std::size_t row_bytes = static_cast<std::size_t>(classes) * sizeof(float);
  auto take_row = [&](const float* logits, int64_t i, int64_t k) {
    std::memcpy(&res.logits[static_cast<std::size_t>(order[i] * classes)], logits + i * classes,
                row_bytes);
    res.exits[static_cast<std::size_t>(order[i])] = k;
  };

  for (std::size_t k = 0; k < p.stages.size(); ++k) {
    const Stage& st = p.stages[k];
    const bool last = k + 1 == p.stages.size();
    const auto m = static_cast<int64_t>(order.size());
    std::vector<Ort::Value> feeds;
    feeds.reserve(st.input_ptrs.size());
    for (int slot : st.input_slots) feeds.push_back(std::move(live[slot]));
    float threshold = last ? 0.0f : thr[k];
    const int64_t no_dims[1] = {0};  // a scalar: shape [], named by the stage's threshold_input
    if (!last) {
      feeds.push_back(Ort::Value::CreateTensor<float>(p.memory, &threshold, 1, no_dims, 0));
    }
    std::vector<Ort::Value> outs;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      outs = st.session.Run(Ort::RunOptions{nullptr}, st.input_ptrs.data(), feeds.data(),
                            feeds.size(), st.output_ptrs.data(), st.output_ptrs.size());
    } catch (const Ort::Exception& e) {
      throw Error(st.where + ": ONNX Runtime failed: " + first_line(e.what()));
    }
    if (stats) {
      stats->session_seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      stats->rows.push_back(m);
      stats->lengths.push_back(length);
    }
    for (std::size_t i = 0; i < st.input_slots.size(); ++i) {
      live[st.input_slots[i]] = std::move(feeds[i]);
    }
    const auto* logits = static_cast<const float*>(detail::checked_data(
        outs[0], ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, {m, classes}, st.logits_label));
    if (last) {
      for (int64_t i = 0; i < m; ++i) take_row(logits, i, static_cast<int64_t>(k));
      break;
    }
    for (const auto& [slot, out] : st.produces) {
      if (out != 0) {
        live[slot] = std::move(outs[out]);
      } else {  // a carried tensor that is also the logits: copied, as outs[0] is read below
        std::vector<int64_t> all(static_cast<std::size_t>(m));
        std::iota(all.begin(), all.end(), 0);
        live[slot] = detail::compact(outs[0], 0, all, m, st.logits_label);
      }
    }
    const auto* decision = static_cast<const bool*>(detail::checked_data(
        outs.back(), ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, {m}, st.decision_label));
    std::vector<int64_t> keep;
    keep.reserve(static_cast<std::size_t>(m));
    for (int64_t i = 0; i < m; ++i) {
      if (decision[i]) {
        take_row(logits, i, static_cast<int64_t>(k));
      } else {
        keep.push_back(i);
      }
    }
    if (keep.empty()) break;
    const bool compacting = static_cast<int64_t>(keep.size()) < m;
    std::vector<Ort::Value> next;
    next.reserve(live.size());
    for (int i = 0; i < p.num_slots; ++i) next.emplace_back(nullptr);
    for (const Carry& c : st.carry) {
      if (compacting && c.axis) {
        next[c.slot] = detail::compact(live[c.slot], *c.axis, keep, m, c.label);
      } else {
        next[c.slot] = std::move(live[c.slot]);  // no row left, or batch-independent: no copy
      }
    }
    if (compacting) {
      for (std::size_t j = 0; j < keep.size(); ++j) keep[j] = order[keep[j]];
      order = std::move(keep);
      if (p.trim) {  // cut to the longest row that remains
        int64_t longest = 1;
        for (int64_t row : order) longest = std::max(longest, lengths[static_cast<std::size_t>(row)]);
        if (longest < length) {
          const std::vector<int64_t> head = first(longest);
          for (const Carry& c : st.carry) {
            if (const auto axis = p.seq_axis[static_cast<std::size_t>(c.slot)]) {
              next[c.slot] = detail::compact(next[c.slot], *axis, head, length, c.label);
            }
          }
          length = longest;
        }
      }
    }
    live = std::move(next);
  }
  return res;
}

Result Program::run(const TensorView& x, const std::optional<std::vector<float>>& thresholds,
                    RunStats* stats) const {
  const auto& specs = impl_->manifest.inputs;
  if (specs.size() != 1) {
    std::vector<std::string> names;
    for (const auto& s : specs) names.push_back(s.name);
    throw DataError("the program has " + std::to_string(specs.size()) + " inputs (" +
                    detail::join(names, ", ") + "); pass a map from input name to tensor");
  }
  return run(Inputs{{specs[0].name, x}}, thresholds, stats);
}

const fs::path& Program::path() const { return impl_->path; }
const std::vector<TensorSpec>& Program::inputs() const { return impl_->manifest.inputs; }
int Program::num_exits() const { return static_cast<int>(impl_->stages.size()); }
int64_t Program::num_classes() const { return impl_->manifest.num_classes; }
const std::vector<float>& Program::thresholds() const { return impl_->thresholds; }
const std::vector<std::string>& Program::exit_names() const { return impl_->exit_names; }
bool Program::trims_padding() const { return impl_->trim; }

int64_t Result::prediction(int64_t row) const {
  const float* r = logits.data() + row * num_classes;
  return std::max_element(r, r + num_classes) - r;
}

}  // namespace eeopt
