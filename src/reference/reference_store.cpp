// The reference log-prob file: the HDF5 layout (root datasets for data.train, the
// same under the group `eval` for data.eval, provenance as root attributes), the checks that
// refuse a file computed from other inputs, and lookup by example index. Files are read and written
// serially by one process (rank 0 writes; every rank reads the few bytes per pair it needs).
#include "dpo/reference/reference_store.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>
#include <hdf5.h>

#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/io/hdf5_handles.h"
#include "dpo/io/timestamp.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;

// --- HDF5 helpers -------------------------------------------------------------------------------

void write_int_attribute(hid_t loc, const char* name, int64_t value, const std::string& path) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  if (!space.valid()) fail("{}: cannot write attribute {}", path, name);
  Handle attribute(H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attribute.valid() || H5Awrite(attribute, H5T_NATIVE_INT64, &value) < 0 || !attribute.close())
    fail("{}: cannot write attribute {}", path, name);
}

std::optional<int64_t> read_int_attribute(hid_t loc, const char* name) {
  if (H5Aexists(loc, name) <= 0) return std::nullopt;
  Handle attribute(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  if (!attribute.valid() || !holds_one_value(attribute)) return std::nullopt;
  Handle type(H5Aget_type(attribute), H5Tclose);
  if (H5Tget_class(type) != H5T_INTEGER) return std::nullopt;
  int64_t value = 0;
  if (H5Aread(attribute, H5T_NATIVE_INT64, &value) < 0) return std::nullopt;
  return value;
}

template <typename T>
void write_vector(hid_t loc, const char* name, hid_t file_type, hid_t memory_type, const std::vector<T>& values,
                  const std::string& path) {
  const hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  if (!space.valid()) fail("{}: cannot write dataset {}", path, name);
  Handle dataset(H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!dataset.valid() || (n > 0 && H5Dwrite(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) ||
      !dataset.close())
    fail("{}: cannot write dataset {}", path, name);
}

// Reads a 1-D dataset of `expected_class` (HDF5 converts float32 to float64 and so on).
template <typename T>
std::vector<T> read_vector(hid_t loc, const std::string& name, H5T_class_t expected_class, hid_t memory_type,
                           const std::string& path) {
  if (H5Lexists(loc, name.c_str(), H5P_DEFAULT) <= 0) fail("{}: dataset {} is missing", path, name);
  Handle dataset(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) fail("{}: {} is not a dataset", path, name);
  Handle type(H5Dget_type(dataset), H5Tclose);
  if (H5Tget_class(type) != expected_class)
    fail("{}: {} must hold {}", path, name, expected_class == H5T_FLOAT ? "floats" : "integers");
  Handle space(H5Dget_space(dataset), H5Sclose);
  if (H5Sget_simple_extent_ndims(space) != 1) fail("{}: {} must be 1-D", path, name);
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space, &n, nullptr);
  require_stored_length(dataset, n, path, name);
  std::vector<T> values(n);
  if (n > 0 && H5Dread(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0)
    fail("{}: cannot read {}", path, name);
  return values;
}

// A row-major [rows, columns] dataset.
template <typename T>
void write_matrix(hid_t loc, const char* name, hid_t file_type, hid_t memory_type, const std::vector<T>& values,
                  int64_t columns, const std::string& path) {
  const hsize_t dims[2] = {values.size() / static_cast<size_t>(columns), static_cast<hsize_t>(columns)};
  Handle space(H5Screate_simple(2, dims, nullptr), H5Sclose);
  if (!space.valid()) fail("{}: cannot write dataset {}", path, name);
  Handle dataset(H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!dataset.valid() || (!values.empty() && H5Dwrite(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) ||
      !dataset.close())
    fail("{}: cannot write dataset {}", path, name);
}

// A 2-D dataset of `rows` rows, row-major; its column count in `columns`.
template <typename T>
std::vector<T> read_matrix(hid_t loc, const char* name, H5T_class_t expected_class, hid_t memory_type, size_t rows,
                           int64_t& columns, const std::string& path) {
  Handle dataset(H5Dopen2(loc, name, H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) fail("{}: {} is not a dataset", path, name);
  Handle type(H5Dget_type(dataset), H5Tclose);
  if (H5Tget_class(type) != expected_class)
    fail("{}: {} must hold {}", path, name, expected_class == H5T_FLOAT ? "floats" : "integers");
  Handle space(H5Dget_space(dataset), H5Sclose);
  if (H5Sget_simple_extent_ndims(space) != 2) fail("{}: {} must be 2-D", path, name);
  hsize_t dims[2] = {0, 0};
  H5Sget_simple_extent_dims(space, dims, nullptr);
  if (dims[0] != rows) fail("{}: {} has {} rows, expected {}", path, name, dims[0], rows);
  require_stored_length(dataset, dims[0] * dims[1], path, name);
  columns = static_cast<int64_t>(dims[1]);
  std::vector<T> values(dims[0] * dims[1]);
  if (!values.empty() && H5Dread(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0)
    fail("{}: cannot read {}", path, name);
  return values;
}

void write_split(hid_t loc, const ReferenceSplit& s, bool with_filled_mask, const std::string& path) {
  write_vector(loc, "chosen_logps", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, s.chosen, path);
  write_vector(loc, "rejected_logps", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, s.rejected, path);
  write_vector(loc, "chosen_lengths", H5T_STD_I32LE, H5T_NATIVE_INT32, s.chosen_lengths, path);
  write_vector(loc, "rejected_lengths", H5T_STD_I32LE, H5T_NATIVE_INT32, s.rejected_lengths, path);
  if (with_filled_mask) write_vector(loc, "filled", H5T_STD_I8LE, H5T_NATIVE_INT8, s.filled, path);
  if (s.more_columns == 0) return;  // pairs: the layout of files before ranked data
  write_matrix(loc, "more_rejected_logps", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, s.more, s.more_columns, path);
  write_matrix(loc, "more_rejected_lengths", H5T_STD_I32LE, H5T_NATIVE_INT32, s.more_lengths, s.more_columns, path);
}

ReferenceSplit read_split(hid_t loc, const std::string& prefix, bool require_complete, const std::string& path) {
  ReferenceSplit s;
  s.chosen = read_vector<double>(loc, "chosen_logps", H5T_FLOAT, H5T_NATIVE_DOUBLE, path);
  s.rejected = read_vector<double>(loc, "rejected_logps", H5T_FLOAT, H5T_NATIVE_DOUBLE, path);
  // Read wide: HDF5's conversion to int32 would silently clamp a wider stored value.
  const auto token_counts = [&](const char* name) {
    const std::vector<int64_t> wide = read_vector<int64_t>(loc, name, H5T_INTEGER, H5T_NATIVE_INT64, path);
    std::vector<int32_t> counts(wide.size());
    for (size_t i = 0; i < wide.size(); ++i) {
      if (wide[i] < 0 || wide[i] > std::numeric_limits<int32_t>::max())
        fail("{}: {}{}[{}] = {} is not a token count", path, prefix, name, i, wide[i]);
      counts[i] = static_cast<int32_t>(wide[i]);
    }
    return counts;
  };
  s.chosen_lengths = token_counts("chosen_lengths");
  s.rejected_lengths = token_counts("rejected_lengths");
  const size_t n = s.chosen.size();
  if (s.rejected.size() != n || s.chosen_lengths.size() != n || s.rejected_lengths.size() != n)
    fail("{}: the datasets of {} differ in length ({}chosen_logps has {})", path, prefix.empty() ? "/" : prefix, prefix, n);
  if (H5Lexists(loc, "filled", H5P_DEFAULT) > 0) {
    s.filled = read_vector<int8_t>(loc, "filled", H5T_INTEGER, H5T_NATIVE_INT8, path);
    if (s.filled.size() != n) fail("{}: {}filled has {} entries, expected {}", path, prefix, s.filled.size(), n);
  } else {
    s.filled.assign(n, 1);
  }
  if (H5Lexists(loc, "more_rejected_logps", H5P_DEFAULT) > 0) {
    int64_t columns = 0, length_columns = 0;
    s.more = read_matrix<double>(loc, "more_rejected_logps", H5T_FLOAT, H5T_NATIVE_DOUBLE, n, columns, path);
    const std::vector<int64_t> wide =
        read_matrix<int64_t>(loc, "more_rejected_lengths", H5T_INTEGER, H5T_NATIVE_INT64, n, length_columns, path);
    if (columns != length_columns)
      fail("{}: {}more_rejected_logps has {} columns but more_rejected_lengths {}", path, prefix, columns, length_columns);
    s.more_columns = columns;
    s.more_lengths.resize(wide.size());
    for (size_t i = 0; i < wide.size(); ++i) {
      if (wide[i] < 0 || wide[i] > std::numeric_limits<int32_t>::max())
        fail("{}: {}more_rejected_lengths[{}] = {} is not a token count", path, prefix, i, wide[i]);
      s.more_lengths[i] = static_cast<int32_t>(wide[i]);
      if (require_complete && !std::isfinite(s.more[i]))
        fail("{}: {}more_rejected_logps[{}] is not finite ({}); the file is unusable, recompute it", path, prefix, i, s.more[i]);
    }
  }
  if (require_complete) {
    if (const int64_t missing = s.unfilled())
      fail("{}: incomplete: {} of {} {}examples have no reference log-probs (an unfinished dpo precompute-ref? rerun "
           "it)", path, missing, n, prefix.empty() ? "" : "eval ");
    for (size_t i = 0; i < n; ++i)
      if (s.chosen_lengths[i] < 1 || s.rejected_lengths[i] < 1)
        fail("{}: {}{}[{}] is 0, but every pair scores at least one token; the file is unusable, recompute it", path,
             prefix, s.chosen_lengths[i] < 1 ? "chosen_lengths" : "rejected_lengths", i);
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(s.chosen[i]) || !std::isfinite(s.rejected[i]))
        fail("{}: {}{}[{}] is not finite ({}); the file is unusable, recompute it", path, prefix,
             std::isfinite(s.chosen[i]) ? "rejected_logps" : "chosen_logps", i,
             std::isfinite(s.chosen[i]) ? s.rejected[i] : s.chosen[i]);
  }
  return s;
}

// Opens an HDF5 file for reading, refusing anything that is not one.
Handle open_hdf5(const std::string& path) {
  silence_hdf5_errors();
  if (!fs::exists(path)) fail("{}: no such reference log-prob file (make it with dpo precompute-ref)", path);
  if (H5Fis_hdf5(path.c_str()) <= 0) fail("{}: not an HDF5 file (truncated, or another format)", path);
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access_properties()), H5Fclose);
  if (!file.valid()) fail_if_lock_refused(path);
  if (!file.valid()) fail("{}: cannot open as HDF5 (truncated or damaged)", path);
  return file;
}

struct Stats {
  double mean = 0, min = 0, max = 0;
};
// Over the filled examples only: an unfinished file's empty slots hold no values (zeros, or
// whatever an interrupted write left), and would drag the statistics.
template <typename T>
Stats stats_of(const std::vector<T>& v, const std::vector<int8_t>& filled) {
  Stats s;
  int64_t n = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!filled[i]) continue;
    const auto x = static_cast<double>(v[i]);
    s.min = n == 0 ? x : std::min(s.min, x);
    s.max = n == 0 ? x : std::max(s.max, x);
    s.mean += x;
    ++n;
  }
  if (n > 0) s.mean /= static_cast<double>(n);
  return s;
}

std::string describe_split(const std::string& label, const ReferenceSplit& s) {
  const int64_t missing = s.unfilled();
  std::string out = fmt::format("{}: {} pairs, {}\n", label, s.size(),
                                missing ? fmt::format("INCOMPLETE ({} unfilled)", missing) : std::string("complete"));
  if (missing == static_cast<int64_t>(s.size())) return out + "  (no filled examples yet)\n";
  const auto line = [&](const char* name, const Stats& st) {
    out += fmt::format("  {:<17} mean {:>12.4f}  min {:>12.4f}  max {:>12.4f}{}\n", name, st.mean, st.min, st.max,
                       missing ? "  (filled examples)" : "");
  };
  line("chosen_logps", stats_of(s.chosen, s.filled));
  line("rejected_logps", stats_of(s.rejected, s.filled));
  line("chosen_lengths", stats_of(s.chosen_lengths, s.filled));
  line("rejected_lengths", stats_of(s.rejected_lengths, s.filled));
  if (s.more_columns > 0)
    out += fmt::format("  ranked: up to {} responses below rejected per example (more_rejected_logps, _lengths)\n",
                       s.more_columns);
  return out;
}

}  // namespace

int64_t ReferenceSplit::unfilled() const {
  return static_cast<int64_t>(std::count(filled.begin(), filled.end(), int8_t{0}));
}

std::string truncation_description(const DataOptions& data) {
  // The paper's budget is named only when chosen, so that files made before it existed still match.
  return fmt::format("max_length={} max_prompt_length={} truncation={}{}", data.max_length, data.max_prompt_length,
                     data.truncation, data.response_budget == "remaining" ? "" : " response_budget=" + data.response_budget);
}

void write_reference_file(const std::string& path, const ReferenceFile& f, bool with_filled_mask) {
  // About 25 bytes per pair and split (12 per ranked response more), plus the attributes.
  const size_t size_hint = 25 * (f.train.size() + (f.eval ? f.eval->size() : 0)) +
                           12 * (f.train.more.size() + (f.eval ? f.eval->more.size() : 0)) + 16384;
  write_hdf5_durably(path, size_hint, [&](hid_t file) {
    const ReferenceProvenance& p = f.provenance;
    write_string_attribute(file, "format", kReferenceFormat, path);
    write_int_attribute(file, "version", kReferenceFormatVersion, path);
    write_string_attribute(file, "dataset", p.dataset, path);
    write_string_attribute(file, "dataset_fingerprint", p.dataset_fingerprint, path);
    write_string_attribute(file, "tokenization", p.tokenization, path);
    if (f.eval) {
      write_string_attribute(file, "eval_tokenization", p.eval_tokenization, path);
      write_string_attribute(file, "eval_dataset", p.eval_dataset, path);
      write_string_attribute(file, "eval_dataset_fingerprint", p.eval_dataset_fingerprint, path);
      write_int_attribute(file, "eval_examples", static_cast<int64_t>(f.eval->size()), path);
    }
    write_string_attribute(file, "model", p.model, path);
    write_string_attribute(file, "model_fingerprint", p.model_fingerprint, path);
    write_string_attribute(file, "truncation", p.truncation, path);
    write_string_attribute(file, "dtype", p.dtype, path);
    write_string_attribute(file, "precision", p.precision, path);
    write_string_attribute(file, "logp_weighting", p.logp_weighting, path);
    write_string_attribute(file, "device", p.device, path);
    write_string_attribute(file, "tool_version", p.tool_version, path);
    write_string_attribute(file, "created", p.created, path);
    write_int_attribute(file, "examples", static_cast<int64_t>(f.train.size()), path);
    write_split(file, f.train, with_filled_mask, path);
    if (f.eval) {
      Handle group(H5Gcreate2(file, "eval", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      if (!group.valid()) fail("{}: cannot create group eval", path);
      write_split(group, *f.eval, with_filled_mask, path);
      if (!group.close()) fail("{}: cannot close group eval", path);
    }
  });
}

ReferenceFile read_reference_file(const std::string& path, bool require_complete) {
  const Handle file = open_hdf5(path);
  const auto format = read_string_attribute(file, "format");
  if (!format || *format != kReferenceFormat)
    fail("{}: not a reference log-prob file (no format attribute \"{}\"; make one with dpo precompute-ref)", path,
         kReferenceFormat);
  const auto version = read_int_attribute(file, "version");
  if (version != kReferenceFormatVersion)
    fail("{}: reference log-prob format version {} is not supported (this build reads version {})", path,
         version ? std::to_string(*version) : "?", kReferenceFormatVersion);
  ReferenceFile f;
  ReferenceProvenance& p = f.provenance;
  const auto text = [&](const char* name) { return read_string_attribute(file, name).value_or(""); };
  p.dataset = text("dataset");
  p.dataset_fingerprint = text("dataset_fingerprint");
  p.eval_dataset = text("eval_dataset");
  p.eval_dataset_fingerprint = text("eval_dataset_fingerprint");
  p.tokenization = text("tokenization");
  p.eval_tokenization = text("eval_tokenization");
  p.model = text("model");
  p.model_fingerprint = text("model_fingerprint");
  p.truncation = text("truncation");
  p.dtype = text("dtype");
  p.precision = text("precision");  // "" in files written before precisions existed
  p.logp_weighting = text("logp_weighting");
  if (p.logp_weighting.empty()) p.logp_weighting = "sum";  // files written before LD-DPO summed plainly
  p.device = text("device");
  p.tool_version = text("tool_version");
  p.created = text("created");
  f.train = read_split(file, "", require_complete, path);
  if (H5Lexists(file, "eval", H5P_DEFAULT) > 0) {
    Handle group(H5Gopen2(file, "eval", H5P_DEFAULT), H5Gclose);
    if (!group.valid()) fail("{}: eval is not a group", path);
    f.eval = read_split(group, "eval/", require_complete, path);
  }
  return f;
}

bool is_reference_file(const std::string& path) {
  silence_hdf5_errors();
  if (!fs::is_regular_file(path) || H5Fis_hdf5(path.c_str()) <= 0) return false;
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access_properties()), H5Fclose);
  return file.valid() && read_string_attribute(file, "format") == std::optional<std::string>(kReferenceFormat);
}

std::string describe_reference_file(const std::string& path) {
  const ReferenceFile f = read_reference_file(path, /*require_complete=*/false);
  const ReferenceProvenance& p = f.provenance;
  std::string out = fmt::format("{}: reference log-probs ({} version {})\n", path, kReferenceFormat, kReferenceFormatVersion);
  out += fmt::format("  dataset          {} (fingerprint {})\n", p.dataset, p.dataset_fingerprint);
  if (!p.tokenization.empty()) out += fmt::format("  tokenized with   {}\n", p.tokenization);
  if (f.eval) out += fmt::format("  eval dataset     {} (fingerprint {})\n", p.eval_dataset, p.eval_dataset_fingerprint);
  if (f.eval && !p.eval_tokenization.empty()) out += fmt::format("  eval tokenized   {}\n", p.eval_tokenization);
  out += fmt::format("  model            {} (fingerprint {})\n", p.model, p.model_fingerprint);
  out += fmt::format("  truncation       {}\n", p.truncation);
  out += fmt::format("  log-prob sums    {}\n", p.logp_weighting);
  out += fmt::format("  computed with    {} precision, {} weights on {}, dpo {}, {}\n",
                     p.precision.empty() ? "unrecorded" : p.precision, p.dtype, p.device, p.tool_version, p.created);
  out += describe_split("train", f.train);
  if (f.eval) out += describe_split("eval", *f.eval);
  return out;
}

std::string logp_weighting_of(const LossOptions& loss) {
  return loss.ld_alpha == 1.0 ? "sum" : fmt::format("ld_alpha={}", loss.ld_alpha);
}

ReferenceProvenance expected_provenance(const Config& config, bool with_train, bool with_eval, Communicator& comm) {
  ReferenceProvenance p;
  p.model = config.model.reference;
  p.truncation = truncation_description(config.data);
  p.dtype = config.model.dtype;
  p.precision = config.train.precision;
  p.logp_weighting = logp_weighting_of(config.loss);
  p.device = config.model.device;
  p.tool_version = DPO_VERSION;
  if (with_train) p.dataset = config.data.train;
  if (with_eval) p.eval_dataset = config.data.eval;
  // Hashing reads every weight file: once, on rank 0. A failure there is sent along as an error
  // text so that every rank throws it (none is left waiting in a collective).
  std::string shared;
  if (comm.rank() == 0) {
    try {
      shared = model_fingerprint(p.model) + "\n" + (with_train ? file_fingerprint(p.dataset) : "") + "\n" +
               (with_eval ? file_fingerprint(p.eval_dataset) : "") + "\n" + utc_timestamp();
    } catch (const Error& e) {
      shared = std::string("!") + e.what();
    }
  }
  comm.broadcast_string(shared, 0);
  if (!shared.empty() && shared[0] == '!') throw Error(shared.substr(1));
  std::vector<std::string> parts;
  size_t begin = 0;
  for (size_t end; (end = shared.find('\n', begin)) != std::string::npos; begin = end + 1)
    parts.push_back(shared.substr(begin, end - begin));
  parts.push_back(shared.substr(begin));
  if (parts.size() != 4) fail("internal: malformed fingerprint broadcast");
  p.model_fingerprint = parts[0];
  p.dataset_fingerprint = parts[1];
  p.eval_dataset_fingerprint = parts[2];
  p.created = parts[3];
  return p;
}

ReferenceStore ReferenceStore::open(const Config& config, bool check_train, bool check_eval, Communicator& comm) {
  const std::string& path = config.reference.logps_path;
  const ReferenceProvenance want = expected_provenance(config, check_train, check_eval, comm);
  ReferenceStore store;
  store.path_ = path;
  store.file_ = read_reference_file(path, /*require_complete=*/true);
  const ReferenceProvenance& have = store.file_.provenance;
  if (check_train && have.dataset_fingerprint != want.dataset_fingerprint)
    fail("{}: was computed from a different dataset (data.train fingerprint {} of {} vs {} of {} in the file)", path,
         want.dataset_fingerprint, want.dataset, have.dataset_fingerprint, have.dataset);
  if (check_eval) {
    if (!store.file_.eval)
      fail("{}: has no eval group (it was computed without data.eval); rerun dpo precompute-ref with data.eval set",
           path);
    if (have.eval_dataset_fingerprint != want.eval_dataset_fingerprint)
      fail("{}: was computed from a different eval dataset (data.eval fingerprint {} of {} vs {} of {} in the file)",
           path, want.eval_dataset_fingerprint, want.eval_dataset, have.eval_dataset_fingerprint, have.eval_dataset);
  }
  if (have.model_fingerprint != want.model_fingerprint)
    fail("{}: was computed with a different reference model (model.reference fingerprint {} of {} vs {} of {} in the "
         "file)", path, want.model_fingerprint, want.model, have.model_fingerprint, have.model);
  if (have.truncation != want.truncation)
    fail("{}: was computed with different truncation settings ({} now vs {} in the file)", path, want.truncation,
         have.truncation);
  if (have.logp_weighting != want.logp_weighting)
    fail("{}: holds log-probs summed as {}, but loss.ld_alpha asks for {}; rerun dpo precompute-ref with this config",
         path, have.logp_weighting, want.logp_weighting);
  // Another precision is allowed (an fp32 reference is the better estimate), but the margins then
  // start near zero rather than at it: said once, before training.
  if (comm.rank() == 0 && have.precision != want.precision)
    fmt::print(stderr,
               "dpo: warning: {}: computed in {} precision, this run computes in {}: at step 1 the policy's log-probs "
               "differ from these by that rounding, so margins start near, not at, 0 (recompute with --set "
               "train.precision={} for the same numerics)\n",
               path, have.precision.empty() ? "unrecorded" : have.precision, want.precision, want.precision);
  return store;
}

const ReferenceSplit& ReferenceStore::split(Split s) const {
  if (s == Split::Train) return file_.train;
  if (!file_.eval) fail("{}: has no eval group (it was computed without data.eval)", path_);
  return *file_.eval;
}

void ReferenceStore::require_examples(Split s, const PreferenceDataset& dataset) const {
  const ReferenceSplit& values = split(s);
  // The data file's bytes are fingerprinted at open; text also depends on how it was tokenized.
  const std::string& then = s == Split::Eval ? file_.provenance.eval_tokenization : file_.provenance.tokenization;
  const std::string now = dataset.tokenization().key();
  if (now != then)
    fail("{}: was computed from {} tokenized otherwise ({} now vs {} in the file); rerun dpo precompute-ref", path_,
         dataset.path(), now.empty() ? "token ids as given" : dataset.tokenization().describe(),
         then.empty() ? "token ids as given" : then);
  if (values.size() != dataset.size())
    fail("{}: holds {} {}examples but {} has {} after truncation; recompute it", path_, values.size(),
         s == Split::Eval ? "eval " : "", dataset.path(), dataset.size());
  if (values.more_columns != dataset.max_more_rejected())
    fail("{}: holds {} log-probs per {}example but {} ranks up to {} responses; recompute it", path_,
         values.more_columns + 2, s == Split::Eval ? "eval " : "", dataset.path(), dataset.max_more_rejected() + 2);
}

PairLogps ReferenceStore::logps(Split s, const std::vector<int64_t>& indices, const at::Device& device,
                                int64_t more_columns) const {
  const ReferenceSplit& values = split(s);
  const auto b = static_cast<int64_t>(indices.size());
  at::Tensor chosen = at::empty({b}, at::kDouble), rejected = at::empty({b}, at::kDouble);
  at::Tensor chosen_tokens = at::empty({b}, at::kLong), rejected_tokens = at::empty({b}, at::kLong);
  auto c = chosen.accessor<double, 1>(), r = rejected.accessor<double, 1>();
  auto ct = chosen_tokens.accessor<int64_t, 1>(), rt = rejected_tokens.accessor<int64_t, 1>();
  for (int64_t k = 0; k < b; ++k) {
    const int64_t i = indices[static_cast<size_t>(k)];
    if (i < 0 || i >= static_cast<int64_t>(values.size()))
      fail("{}: example {} is out of range ({} examples)", path_, i, values.size());
    const auto u = static_cast<size_t>(i);
    c[k] = values.chosen[u];
    r[k] = values.rejected[u];
    ct[k] = values.chosen_lengths[u];
    rt[k] = values.rejected_lengths[u];
  }
  PairLogps out;
  out.chosen = chosen.to(device, at::kFloat);
  out.rejected = rejected.to(device, at::kFloat);
  out.chosen_tokens = chosen_tokens.to(device);
  out.rejected_tokens = rejected_tokens.to(device);
  if (more_columns == 0) return out;
  if (more_columns > values.more_columns)
    fail("{}: holds {} responses below rejected per example, a batch asks for {}; recompute it", path_,
         values.more_columns, more_columns);
  at::Tensor more = at::zeros({b, more_columns}, at::kDouble), more_tokens = at::zeros({b, more_columns}, at::kLong);
  auto m = more.accessor<double, 2>();
  auto mt = more_tokens.accessor<int64_t, 2>();
  for (int64_t k = 0; k < b; ++k)
    for (int64_t j = 0; j < more_columns; ++j) {
      const auto at = static_cast<size_t>(indices[static_cast<size_t>(k)] * values.more_columns + j);
      m[k][j] = values.more[at];
      mt[k][j] = values.more_lengths[at];
    }
  out.more = more.to(device, at::kFloat);
  out.more_tokens = more_tokens.to(device);
  return out;
}

void require_same_reference_on_all_ranks(Communicator& comm, const ReferenceStore& store) {
  if (comm.world_size() == 1) return;
  const ReferenceFile& f = store.file();
  Hasher h;
  for (const ReferenceSplit* split : {&f.train, f.eval ? &*f.eval : nullptr}) {
    if (!split) continue;
    h.update(reinterpret_cast<const char*>(split->chosen.data()), split->size() * sizeof(double));
    h.update(reinterpret_cast<const char*>(split->rejected.data()), split->size() * sizeof(double));
    h.update(reinterpret_cast<const char*>(split->chosen_lengths.data()), split->size() * sizeof(int32_t));
    h.update(reinterpret_cast<const char*>(split->rejected_lengths.data()), split->size() * sizeof(int32_t));
    h.update(reinterpret_cast<const char*>(split->more.data()), split->more.size() * sizeof(double));
    h.update(reinterpret_cast<const char*>(split->more_lengths.data()), split->more_lengths.size() * sizeof(int32_t));
  }
  require_same_on_all_ranks(comm, fmt::format("reference.logps_path {}", store.path()),
                            fmt::format("{} pairs{}, fingerprint {}", f.train.size(),
                                        f.eval ? fmt::format(" + {} eval pairs", f.eval->size()) : "", h.hex()));
}

}  // namespace dpo
