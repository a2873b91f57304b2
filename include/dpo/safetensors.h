// The safetensors file format (8-byte little-endian header size, JSON header, raw data), our own
// reader and writer. The header is untrusted input: sizes, offsets, shapes and dtypes are checked
// and every error names the file and the tensor.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace dpo {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct SafetensorsFile {
  NamedTensors tensors;                          // in file order of data offsets
  std::map<std::string, std::string> metadata;  // the "__metadata__" entry
};

// Supports F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL. Tensors are CPU, contiguous, owned.
SafetensorsFile read_safetensors(const std::string& path);

// Tensors are written in the given order, contiguous, in their own dtype. Temporary name, then
// rename.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace dpo
