// Embedding example: classify the rows of an .npy file with a compiled early-exit program.
//   classify PROGRAM INPUT.npy [THREADS]
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <eeopt/npy.h>
#include <eeopt/program.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: classify PROGRAM INPUT.npy [THREADS]\n");
    return 2;
  }
  try {
    // Load once: verifies the manifest and every stage's sha256, one ORT session per stage.
    const auto program = eeopt::Program::load(argv[1], argc > 3 ? std::atoi(argv[3]) : 1);
    const eeopt::Tensor x = eeopt::read_npy(argv[2]);  // or TensorView::of(ptr, shape)
    // Per-sample exits: confident rows leave early; results come back in row order.
    const eeopt::Result result = program.run(x);
    std::vector<int64_t> per_exit(program.num_exits(), 0);
    for (int64_t i = 0; i < result.rows; ++i) {
      std::printf("row %lld: class %lld (exit %lld)\n", static_cast<long long>(i),
                  static_cast<long long>(result.prediction(i)),
                  static_cast<long long>(result.exits[i]));
      ++per_exit[result.exits[i]];
    }
    for (int k = 0; k < program.num_exits(); ++k) {
      std::printf("exit %d (%s): %lld rows\n", k, program.exit_names()[k].c_str(),
                  static_cast<long long>(per_exit[k]));
    }
  } catch (const eeopt::Error& e) {  // one line, naming the file, input or field
    std::fprintf(stderr, "classify: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
