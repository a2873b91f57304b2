// libFuzzer harness: the safetensors header reader (read_safetensors_header from a stream, which
// the path overload runs on the opened file).
//
// Input: 8 bytes little-endian = how many bytes the file has beyond the input (its data buffer's
// tail), then the file's first bytes: 8-byte header size, header JSON, data. An accepted header
// must describe tensors that lie inside the data buffer, in offset order, without overlap, each
// spanning exactly its shape's bytes; a header that does not is a validation hole, reported as a
// crash. Small accepted files are also written out and read whole with read_safetensors.
// dpo::Error is the expected refusal; any other exception escapes and libFuzzer reports it.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "dpo/error.h"
#include "dpo/model/safetensors.h"

namespace {

uint64_t read_u64_le(const uint8_t* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors_header: accepted header breaks its contract: %s\n", what);
  std::abort();
}

void check_entries(const dpo::SafetensorsHeader& header, uint64_t buffer_size) {
  uint64_t previous_end = 0;
  for (const auto& e : header.entries) {
    if (e.begin > e.end || e.end > buffer_size) broken("data_offsets outside the data buffer");
    if (e.begin < previous_end) broken("entries overlap or are not in offset order");
    previous_end = e.end;
    uint64_t bytes = at::elementSize(e.dtype);
    for (const int64_t dim : e.shape) {
      if (dim < 0) broken("negative dimension");
      bytes *= static_cast<uint64_t>(dim);  // no overflow: the parser checked the product
    }
    if (bytes != e.end - e.begin) broken("data_offsets span differs from the shape's byte count");
  }
}

// Writes the file (the input's bytes, then `tail` zero bytes) and reads it whole.
void read_whole_file(const std::string& image, uint64_t tail) {
  // In memory where /dev/shm exists: one file per input.
  static const std::string path =
      ((std::filesystem::is_directory("/dev/shm") ? std::filesystem::path("/dev/shm")
                                                  : std::filesystem::temp_directory_path()) /
       ("dpo-fuzz-safetensors-" + std::to_string(getpid()) + ".safetensors"))
          .string();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(image.data(), static_cast<std::streamsize>(image.size()));
    const std::string zeros(tail, '\0');
    out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
    if (!out) broken("cannot write the temporary file (is the temporary directory full?)");
  }
  // Removed on every exit path, a dpo::Error included.
  struct RemoveOnExit {
    const std::string& path;
    ~RemoveOnExit() { std::remove(path.c_str()); }
  } remove_on_exit{path};
  const dpo::SafetensorsFile file = dpo::read_safetensors(path);
  for (const auto& [name, tensor] : file.tensors) {
    if (!tensor.is_contiguous()) broken("read_safetensors returned a non-contiguous tensor");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  const std::string image(reinterpret_cast<const char*>(data) + 8, size - 8);
  // The whole file's size must be representable.
  const uint64_t tail = std::min(read_u64_le(data), std::numeric_limits<uint64_t>::max() - image.size());
  const uint64_t file_size = image.size() + tail;
  std::istringstream in(image);
  try {
    const dpo::SafetensorsHeader header = dpo::read_safetensors_header(in, file_size, "fuzz.safetensors");
    if (header.data_start < 8 || header.data_start > file_size) broken("data_start outside the file");
    check_entries(header, file_size - header.data_start);
    if (tail <= (1u << 16)) read_whole_file(image, tail);
  } catch (const dpo::Error&) {
    // the expected refusal of a bad header
  }
  return 0;
}
