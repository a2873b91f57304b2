// The safetensors file format (8-byte little-endian header size, JSON header, raw data), our own
// reader and writer. The header is untrusted input: sizes, offsets, shapes and dtypes are checked
// and every error names the file and the tensor.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace dpo {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct SafetensorsFile {
  NamedTensors tensors;                         // in file order of data offsets
  std::map<std::string, std::string> metadata;  // the "__metadata__" entry
};

// One entry of a validated header: where the tensor's bytes lie, relative to the data buffer.
struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // sorted by data offset
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data buffer (8 + N)
};

// Reads and validates only the header (for inspecting large checkpoints without loading them).
SafetensorsHeader read_safetensors_header(const std::string& path);
// The same from a stream positioned at the file's first byte, `file_size` bytes long (`path` names
// it in messages): the in-memory entry the fuzz harness drives.
SafetensorsHeader read_safetensors_header(std::istream& in, uint64_t file_size, const std::string& path);

// Supports F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL. Tensors are CPU, contiguous, owned.
SafetensorsFile read_safetensors(const std::string& path);

// Tensors are written in the given order, contiguous, in their own dtype. Temporary name, then
// rename.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace dpo
