#include "dpo/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/io/json_input.h"

namespace dpo {
namespace {

// A header larger than this is not a real checkpoint's; refusing it bounds what a corrupt file
// can make us allocate.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

bool dtype_from_name(const std::string& name, at::ScalarType* out) {
  for (const auto& d : kDtypes) {
    if (name == d.name) {
      *out = d.type;
      return true;
    }
  }
  return false;
}

const char* name_of_dtype(at::ScalarType type, const std::string& path, const std::string& tensor) {
  for (const auto& d : kDtypes) {
    if (type == d.type) return d.name;
  }
  fail("{}: tensor '{}' has dtype {} which safetensors cannot store", path, tensor,
       c10::toString(type));
}

uint64_t read_u64_le(const unsigned char* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

std::string u64_le(uint64_t v) {
  std::string b(8, '\0');
  for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
  return b;
}

uint64_t json_u64(const nlohmann::json& v, const std::string& path, const std::string& tensor,
                  const char* what) {
  // Parsed JSON stores every non-negative integer as unsigned; negatives and floats are refused.
  if (!v.is_number_unsigned()) {
    fail("{}: tensor '{}': {} must be non-negative integers, got {}", path, tensor, what, json_excerpt(v));
  }
  return v.get<uint64_t>();
}

SafetensorsEntry parse_entry(const std::string& name, const nlohmann::json& e,
                             const std::string& path, uint64_t buffer_size) {
  if (!e.is_object()) fail("{}: tensor '{}': header entry is not an object", path, name);
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!e.contains(key)) fail("{}: tensor '{}': header entry lacks '{}'", path, name, key);
  }
  SafetensorsEntry entry;
  entry.name = name;
  const auto& dtype = e["dtype"];
  if (!dtype.is_string() || !dtype_from_name(dtype.get<std::string>(), &entry.dtype)) {
    fail("{}: tensor '{}': unknown dtype {}", path, name, json_excerpt(dtype));
  }
  const auto& shape = e["shape"];
  if (!shape.is_array()) fail("{}: tensor '{}': shape is not an array", path, name);
  uint64_t bytes = at::elementSize(entry.dtype);
  for (const auto& dim : shape) {
    const uint64_t n = json_u64(dim, path, name, "shape entries");
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (n != 0 && bytes > std::numeric_limits<uint64_t>::max() / n)) {
      fail("{}: tensor '{}': shape {} overflows the byte count", path, name, json_excerpt(shape));
    }
    bytes *= n;
    entry.shape.push_back(static_cast<int64_t>(n));
  }
  const auto& offsets = e["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    fail("{}: tensor '{}': data_offsets must be [begin, end]", path, name);
  }
  entry.begin = json_u64(offsets[0], path, name, "data_offsets");
  entry.end = json_u64(offsets[1], path, name, "data_offsets");
  if (entry.begin > entry.end || entry.end > buffer_size) {
    fail("{}: tensor '{}': data_offsets [{}, {}] out of range of the {}-byte data buffer", path,
         name, entry.begin, entry.end, buffer_size);
  }
  if (entry.end - entry.begin != bytes) {
    fail("{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets span {}", path, name,
         json_excerpt(shape), dtype.get<std::string>(), bytes, entry.end - entry.begin);
  }
  return entry;
}

}  // namespace

SafetensorsHeader read_safetensors_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open safetensors file", path);
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) fail("{}: cannot stat: {}", path, ec.message());
  return read_safetensors_header(in, file_size, path);
}

SafetensorsHeader read_safetensors_header(std::istream& in, uint64_t file_size, const std::string& path) {
  unsigned char size_bytes[8];
  if (file_size < 8 || !in.read(reinterpret_cast<char*>(size_bytes), 8)) {
    fail("{}: too short for a safetensors file ({} bytes)", path, file_size);
  }
  const uint64_t header_size = read_u64_le(size_bytes);
  if (header_size > file_size - 8) {
    fail("{}: header size {} runs past the end of the {}-byte file", path, header_size, file_size);
  }
  if (header_size > kMaxHeaderBytes) {
    fail("{}: header size {} exceeds the {}-byte limit", path, header_size, kMaxHeaderBytes);
  }
  std::string text(header_size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(header_size))) {
    fail("{}: cannot read the {}-byte header", path, header_size);
  }
  const nlohmann::json header = parse_json(text, path + ": header");
  if (!header.is_object()) fail("{}: header is not a JSON object", path);

  SafetensorsHeader result;
  result.data_start = 8 + header_size;
  const uint64_t buffer_size = file_size - result.data_start;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail("{}: __metadata__ is not an object", path);
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string()) fail("{}: __metadata__ '{}' is not a string", path, key);
        result.metadata[key] = v.get<std::string>();
      }
      continue;
    }
    result.entries.push_back(parse_entry(name, value, path, buffer_size));
  }
  std::stable_sort(result.entries.begin(), result.entries.end(),
                   [](const auto& a, const auto& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < result.entries.size(); ++i) {
    if (result.entries[i].begin < result.entries[i - 1].end) {
      fail("{}: tensor '{}' overlaps tensor '{}' in the data buffer", path, result.entries[i].name,
           result.entries[i - 1].name);
    }
  }
  return result;
}

SafetensorsFile read_safetensors(const std::string& path) {
  SafetensorsHeader header = read_safetensors_header(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open safetensors file", path);
  SafetensorsFile result;
  result.metadata = std::move(header.metadata);
  for (const auto& e : header.entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    const uint64_t bytes = e.end - e.begin;
    if (bytes > 0) {
      in.seekg(static_cast<std::streamoff>(header.data_start + e.begin));
      if (!in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes))) {
        fail("{}: tensor '{}': cannot read its {} bytes", path, e.name, bytes);
      }
    }
    result.tensors.emplace_back(e.name, std::move(t));
  }
  return result;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps __metadata__ first and the tensors in the caller's order, which makes the
  // files reproducible and easy to read with `head -c`.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) header["__metadata__"][k] = v;
  }
  std::vector<at::Tensor> contiguous;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || !names.insert(name).second) {
      fail("{}: tensor name '{}' is duplicated or reserved", path, name);
    }
    if (!tensor.defined()) fail("{}: tensor '{}' is undefined", path, name);
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", name_of_dtype(t.scalar_type(), path, name)},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(t));
  }
  std::string text = header.dump();
  // Padding to 8 bytes keeps the data buffer aligned for readers that map it.
  text.append((8 - text.size() % 8) % 8, ' ');

  TemporaryPath tmp(path);
  SyncedFile out(tmp.path());
  out.write(u64_le(text.size()));
  out.write(text);
  for (const auto& t : contiguous) out.write(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  out.finish();
  tmp.commit();
}

}  // namespace dpo
