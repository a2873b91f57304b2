// The HDF5 layout of preference data (README, "Data"): groups /prompt, /chosen, /rejected, each with
// `tokens` (int32, all sequences concatenated) and `offsets` (int64, N+1); ranked records add
// /more_rejected: the responses ranked below `rejected`, record after record, as `tokens` and
// `offsets` (one more than there are such responses), and `counts` (int64, N: how many per record). Files are opened serially
// without file locking and written through write_hdf5_durably; HDF5's own error printing is
// switched off so that every problem surfaces as one dpo::Error naming the file, the dataset and
// the record.
#include <algorithm>
#include <filesystem>
#include <limits>
#include <utility>

#include <hdf5.h>

#include "dpo/data/preference_data.h"
#include "dpo/error.h"
#include "dpo/io/hdf5_handles.h"

namespace dpo {
namespace {

constexpr const char* kFields[3] = {"prompt", "chosen", "rejected"};
constexpr const char* kMoreRejected = "more_rejected";

// A 1-D integer dataset, opened and checked, not yet read.
struct IntegerDataset {
  Handle dataset;
  Handle type;
  hsize_t length = 0;
};

IntegerDataset open_integer_dataset(hid_t group, const char* name, const std::string& file,
                                    const std::string& where) {
  if (H5Lexists(group, name, H5P_DEFAULT) <= 0) fail("{}: dataset {} is missing", file, where);
  Handle dataset(H5Dopen2(group, name, H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) fail("{}: {} is not a dataset", file, where);
  Handle type(H5Dget_type(dataset), H5Tclose);
  if (H5Tget_class(type) != H5T_INTEGER) fail("{}: {} must hold integers", file, where);
  Handle space(H5Dget_space(dataset), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank != 1) fail("{}: {} must be 1-D, it has rank {}", file, where, rank);
  hsize_t length = 0;
  H5Sget_simple_extent_dims(space, &length, nullptr);
  require_stored_length(dataset, length, file, where);
  return {std::move(dataset), std::move(type), length};
}

template <typename T>
std::vector<T> read_all(const IntegerDataset& d, hid_t memory_type, const std::string& file,
                        const std::string& where) {
  std::vector<T> values(d.length);
  if (d.length > 0 && H5Dread(d.dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) {
    fail("{}: cannot read {}", file, where);
  }
  return values;
}

struct Field {
  std::vector<int32_t> tokens;
  std::vector<int64_t> offsets;
};

int64_t record_of_position(const std::vector<int64_t>& offsets, size_t position) {
  const auto it = std::upper_bound(offsets.begin(), offsets.end(), static_cast<int64_t>(position));
  return static_cast<int64_t>(it - offsets.begin()) - 1;
}

Field read_field(hid_t file_id, const char* name, const std::string& file, int64_t vocab_size) {
  const std::string group_path = std::string("/") + name;
  if (H5Lexists(file_id, name, H5P_DEFAULT) <= 0) fail("{}: group {} is missing", file, group_path);
  Handle group(H5Gopen2(file_id, name, H5P_DEFAULT), H5Gclose);
  if (!group.valid()) fail("{}: {} is not a group", file, group_path);

  Field field;
  const std::string offsets_path = group_path + "/offsets";
  field.offsets = read_all<int64_t>(open_integer_dataset(group, "offsets", file, offsets_path), H5T_NATIVE_INT64,
                                    file, offsets_path);
  const auto& offsets = field.offsets;
  if (offsets.empty()) fail("{}: {} is empty (it needs N+1 entries, starting with 0)", file, offsets_path);
  if (offsets[0] != 0) fail("{}: {}[0] is {}, expected 0", file, offsets_path, offsets[0]);
  for (size_t i = 1; i < offsets.size(); ++i) {
    if (offsets[i] < offsets[i - 1]) {
      fail("{}: {} decreases at record {} ({} then {})", file, offsets_path, i - 1, offsets[i - 1], offsets[i]);
    }
  }

  const std::string tokens_path = group_path + "/tokens";
  const IntegerDataset tokens = open_integer_dataset(group, "tokens", file, tokens_path);
  if (static_cast<int64_t>(tokens.length) != offsets.back()) {
    fail("{}: {} ends at {} but {} holds {} tokens", file, offsets_path, offsets.back(), tokens_path,
         tokens.length);
  }
  // Wider or unsigned 32-bit storage (e.g. numpy's default int64) is read wide and range-checked,
  // since HDF5's conversion would silently clamp.
  const size_t stored_size = H5Tget_size(tokens.type);
  const bool fits_int32 = stored_size < 4 || (stored_size == 4 && H5Tget_sign(tokens.type) == H5T_SGN_2);
  const auto check_id = [&](int64_t id, size_t position) {
    if (id < 0 || id > std::numeric_limits<int32_t>::max() || (vocab_size > 0 && id >= vocab_size)) {
      fail("{}: {} record {}: id {} is outside the vocabulary ({})", file, tokens_path,
           record_of_position(offsets, position), id,
           vocab_size > 0 ? fmt::format("vocab size {}", vocab_size) : std::string("ids must be in int32 and >= 0"));
    }
  };
  if (fits_int32) {
    field.tokens = read_all<int32_t>(tokens, H5T_NATIVE_INT32, file, tokens_path);
    for (size_t k = 0; k < field.tokens.size(); ++k) check_id(field.tokens[k], k);
  } else {
    const auto wide = read_all<int64_t>(tokens, H5T_NATIVE_INT64, file, tokens_path);
    field.tokens.reserve(wide.size());
    for (size_t k = 0; k < wide.size(); ++k) {
      check_id(wide[k], k);
      field.tokens.push_back(static_cast<int32_t>(wide[k]));
    }
  }
  return field;
}

void write_dataset(hid_t group, const char* name, hid_t file_type, hid_t memory_type, const void* data,
                   hsize_t length, const std::string& file) {
  Handle space(H5Screate_simple(1, &length, nullptr), H5Sclose);
  if (!space.valid()) fail("{}: cannot create dataset {}", file, name);
  Handle dataset(H5Dcreate2(group, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) fail("{}: cannot create dataset {}", file, name);
  if ((length > 0 && H5Dwrite(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) || !dataset.close()) {
    fail("{}: cannot write dataset {}", file, name);
  }
}

void write_attributes(hid_t file_id, const std::string& file) {
  const std::string format = "dpo-preferences";
  Handle string_type(H5Tcopy(H5T_C_S1), H5Tclose);
  Handle scalar(H5Screate(H5S_SCALAR), H5Sclose);
  if (!string_type.valid() || H5Tset_size(string_type, format.size()) < 0 || !scalar.valid())
    fail("{}: cannot write the format attributes", file);
  Handle format_attr(H5Acreate2(file_id, "format", string_type, scalar, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const int32_t version = 1;
  Handle version_attr(H5Acreate2(file_id, "version", H5T_STD_I32LE, scalar, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!format_attr.valid() || !version_attr.valid() || H5Awrite(format_attr, string_type, format.data()) < 0 ||
      H5Awrite(version_attr, H5T_NATIVE_INT32, &version) < 0 || !format_attr.close() || !version_attr.close()) {
    fail("{}: cannot write the format attributes", file);
  }
}

// Group `name` with the sequences concatenated in `tokens` and their `offsets`; left open.
Handle write_sequences(hid_t file_id, const char* name, const std::vector<const TokenIds*>& sequences,
                       const std::string& file) {
  std::vector<int64_t> offsets;
  offsets.reserve(sequences.size() + 1);
  offsets.push_back(0);
  for (const TokenIds* ids : sequences) offsets.push_back(offsets.back() + static_cast<int64_t>(ids->size()));
  std::vector<int32_t> tokens;
  tokens.reserve(static_cast<size_t>(offsets.back()));
  for (const TokenIds* ids : sequences) tokens.insert(tokens.end(), ids->begin(), ids->end());
  Handle group(H5Gcreate2(file_id, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  if (!group.valid()) fail("{}: cannot create group /{}", file, name);
  write_dataset(group, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, tokens.data(), tokens.size(), file);
  write_dataset(group, "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, offsets.data(), offsets.size(), file);
  return group;
}

// The tokenization attributes, named as TokenizationId's fields.
struct TokenizationAttribute {
  const char* name;
  std::string TokenizationId::*field;
};
constexpr TokenizationAttribute kTokenizationAttributes[] = {
    {"tokenizer", &TokenizationId::tokenizer},
    {"tokenizer_fingerprint", &TokenizationId::tokenizer_fingerprint},
    {"chat_template_fingerprint", &TokenizationId::chat_template_fingerprint},
    {"eos_token", &TokenizationId::eos_token},
    {"boundary_mismatch", &TokenizationId::boundary_mismatch},
};

void write_layout(hid_t file_id, const std::string& file, const std::vector<RawPreferencePair>& pairs,
                  const TokenizationId& tokenization, const std::string& source) {
  write_attributes(file_id, file);
  if (!tokenization.empty()) {
    for (const auto& a : kTokenizationAttributes) write_string_attribute(file_id, a.name, tokenization.*a.field, file);
    write_string_attribute(file_id, "source", source, file);
  }
  for (int f = 0; f < 3; ++f) {
    const auto member = f == 0 ? &RawPreferencePair::prompt : f == 1 ? &RawPreferencePair::chosen
                                                                     : &RawPreferencePair::rejected;
    std::vector<const TokenIds*> sequences;
    sequences.reserve(pairs.size());
    for (const auto& pair : pairs) sequences.push_back(&(pair.*member));
    Handle group = write_sequences(file_id, kFields[f], sequences, file);
    if (!group.close()) fail("{}: cannot close group /{}", file, kFields[f]);
  }
  std::vector<const TokenIds*> more;
  std::vector<int64_t> counts;
  counts.reserve(pairs.size());
  for (const auto& pair : pairs) {
    counts.push_back(static_cast<int64_t>(pair.more_rejected.size()));
    for (const TokenIds& ids : pair.more_rejected) more.push_back(&ids);
  }
  if (more.empty()) return;  // pairs only: the layout of files before ranked records
  Handle group = write_sequences(file_id, kMoreRejected, more, file);
  write_dataset(group, "counts", H5T_STD_I64LE, H5T_NATIVE_INT64, counts.data(), counts.size(), file);
  if (!group.close()) fail("{}: cannot close group /{}", file, kMoreRejected);
}

// The responses of ranked records ranked below `rejected` (group /more_rejected) into `pairs`.
void read_more_rejected(hid_t file_id, const std::string& path, int64_t vocab_size, std::vector<RawPreferencePair>& pairs) {
  const Field field = read_field(file_id, kMoreRejected, path, vocab_size);
  Handle group(H5Gopen2(file_id, kMoreRejected, H5P_DEFAULT), H5Gclose);
  const std::string counts_path = std::string("/") + kMoreRejected + "/counts";
  const std::vector<int64_t> counts =
      read_all<int64_t>(open_integer_dataset(group, "counts", path, counts_path), H5T_NATIVE_INT64, path, counts_path);
  if (counts.size() != pairs.size())
    fail("{}: {} holds {} records but /prompt/offsets holds {}", path, counts_path, counts.size(), pairs.size());
  const size_t responses = field.offsets.size() - 1;
  size_t next = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (counts[i] < 0 || static_cast<uint64_t>(counts[i]) > responses - next)
      fail("{}: {}[{}] = {} does not fit the {} responses of /{}/offsets", path, counts_path, i, counts[i], responses,
           kMoreRejected);
    for (int64_t k = 0; k < counts[i]; ++k, ++next) {
      const int64_t begin = field.offsets[next], end = field.offsets[next + 1];
      if (begin == end) fail("{}: /{} response {} (record {}) is empty (a response needs a token)", path, kMoreRejected, next, i);
      pairs[i].more_rejected.emplace_back(field.tokens.begin() + begin, field.tokens.begin() + end);
    }
  }
  if (next != responses)
    fail("{}: {} sums to {} but /{}/offsets holds {} responses", path, counts_path, next, kMoreRejected, responses);
}

}  // namespace

std::vector<RawPreferencePair> read_preference_hdf5(const std::string& path, int64_t vocab_size) {
  silence_hdf5_errors();
  Handle file_id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access_properties()), H5Fclose);
  if (!file_id.valid()) fail_if_lock_refused(path);
  if (!file_id.valid()) fail("{}: cannot open as an HDF5 file", path);

  Field fields[3];
  for (int f = 0; f < 3; ++f) fields[f] = read_field(file_id, kFields[f], path, vocab_size);
  const size_t records = fields[0].offsets.size() - 1;
  for (int f = 1; f < 3; ++f) {
    if (fields[f].offsets.size() - 1 != records) {
      fail("{}: /{}/offsets holds {} records but /prompt/offsets holds {}", path, kFields[f],
           fields[f].offsets.size() - 1, records);
    }
  }
  if (records == 0) fail("{}: no preference records", path);

  std::vector<RawPreferencePair> pairs(records);
  for (int f = 0; f < 3; ++f) {
    Field& field = fields[f];
    const auto member = f == 0 ? &RawPreferencePair::prompt : f == 1 ? &RawPreferencePair::chosen
                                                                     : &RawPreferencePair::rejected;
    for (size_t i = 0; i < records; ++i) {
      const int64_t begin = field.offsets[i], end = field.offsets[i + 1];
      if (f > 0 && begin == end) fail("{}: /{} record {} is empty (a response needs a token)", path, kFields[f], i);
      (pairs[i].*member).assign(field.tokens.begin() + begin, field.tokens.begin() + end);
    }
    field = Field{};  // release the concatenated copy before the next field is split
  }
  if (H5Lexists(file_id, kMoreRejected, H5P_DEFAULT) > 0) read_more_rejected(file_id, path, vocab_size, pairs);
  return pairs;
}

void write_preference_hdf5(const std::string& path, const std::vector<RawPreferencePair>& pairs,
                           const TokenizationId& tokenization, const std::string& source) {
  size_t bytes = 8 * 3 * (pairs.size() + 1) + 16384;
  for (const auto& pair : pairs) {
    bytes += 4 * (pair.prompt.size() + pair.chosen.size() + pair.rejected.size()) + 8;
    for (const TokenIds& ids : pair.more_rejected) bytes += 4 * ids.size() + 8;
  }
  write_hdf5_durably(path, bytes, [&](hid_t file) { write_layout(file, path, pairs, tokenization, source); });
}

TokenizationId read_preference_hdf5_tokenization(const std::string& path) {
  silence_hdf5_errors();
  Handle file_id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access_properties()), H5Fclose);
  if (!file_id.valid()) fail_if_lock_refused(path);
  if (!file_id.valid()) fail("{}: cannot open as an HDF5 file", path);
  TokenizationId id;
  for (const auto& a : kTokenizationAttributes) id.*a.field = read_string_attribute(file_id, a.name).value_or("");
  return id;
}

}  // namespace dpo
