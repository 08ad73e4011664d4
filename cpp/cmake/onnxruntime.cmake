# Defines the imported target onnxruntime::onnxruntime from ONNXRUNTIME_ROOT (a directory with
# include/ and lib/, as in an official ONNX Runtime release). Used by eeopt's own build and by
# its installed package config.
if(TARGET onnxruntime::onnxruntime)
  return()
endif()
find_path(ONNXRUNTIME_INCLUDE_DIR onnxruntime_cxx_api.h
  PATHS "${ONNXRUNTIME_ROOT}/include" "${ONNXRUNTIME_ROOT}/include/onnxruntime"
  NO_DEFAULT_PATH)
find_library(ONNXRUNTIME_LIBRARY NAMES onnxruntime
  PATHS "${ONNXRUNTIME_ROOT}/lib" "${ONNXRUNTIME_ROOT}/lib64" NO_DEFAULT_PATH)
if(NOT ONNXRUNTIME_INCLUDE_DIR OR NOT ONNXRUNTIME_LIBRARY)
  message(FATAL_ERROR
    "ONNX Runtime not found under ONNXRUNTIME_ROOT='${ONNXRUNTIME_ROOT}' (need include/"
    "onnxruntime_cxx_api.h and lib/libonnxruntime.so): run scripts/build_cpp.sh, or pass "
    "-DONNXRUNTIME_ROOT=DIR pointing at an ONNX Runtime release")
endif()
add_library(onnxruntime::onnxruntime SHARED IMPORTED)
set_target_properties(onnxruntime::onnxruntime PROPERTIES
  IMPORTED_LOCATION "${ONNXRUNTIME_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${ONNXRUNTIME_INCLUDE_DIR}")
