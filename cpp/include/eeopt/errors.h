// The exception hierarchy, mirroring eeopt/errors.py. Every message is one line that names the
// input, file or flag and says how to fix it.
#pragma once

#include <stdexcept>
#include <string>

namespace eeopt {

/// Base class of every error eeopt throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A compiled program directory is missing, tampered with or inconsistent.
class ManifestError : public Error {
 public:
  using Error::Error;
};

/// Input data has the wrong name, shape or dtype, or a file cannot be read.
class DataError : public Error {
 public:
  using Error::Error;
};

/// A flag or argument is out of range (the command line exits with status 2).
class UsageError : public Error {
 public:
  using Error::Error;
};

/// ONNX Runtime cannot load a stage's model.
class UnsupportedModelError : public Error {
 public:
  using Error::Error;
};

}  // namespace eeopt
