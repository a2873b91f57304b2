// libFuzzer harness: OUR checks of the reference log-prob file (read_reference_file,
// describe_reference_file, is_reference_file, ReferenceStore::open, require_examples, logps).
//
// HDF5's own file-format parser is not fuzzed (that is the library's domain): the input drives
// the HDF5 C API to write a structurally valid file with hostile CONTENT to /dev/shm: attributes
// missing, of the wrong type, non-scalar or with wrong values; datasets missing, of other
// classes and widths, 2-D or scalar, of mismatched lengths, replaced by groups or dangling links;
// NaN/inf/huge/negative values; filled masks with zeros or odd values; the eval group present,
// absent or not a group. An accepted file must hold datasets of one length, complete and finite
// when asked; the store must serve exactly the stored values and refuse indices out of range.
// dpo::Error is the expected refusal; any other exception escapes and libFuzzer reports it.
//
// Some datasets declare absurd lengths (up to 2^40 elements, never written, so HDF5 allocates no
// file space): the reader must refuse them rather than ask the allocator for terabytes.
#include <fuzzer/FuzzedDataProvider.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dpo/config/config.h"
#include "dpo/data/preference_data.h"
#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/io/hdf5_handles.h"
#include "dpo/reference/reference_store.h"

namespace {

namespace fs = std::filesystem;
using dpo::Handle;

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_reference_file: %s\n", what);
  std::abort();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) broken("cannot write the fixture (is the temporary directory full?)");
}

// What the file is checked against: a model directory, train and eval data, a config naming them,
// and the provenance the store expects. Made once per process, removed at exit.
struct Fixture {
  fs::path dir;
  std::string reference_path;
  dpo::Config config;
  std::unique_ptr<dpo::Communicator> comm;
  dpo::ReferenceProvenance want;
  std::optional<dpo::PreferenceDataset> train, eval;

  Fixture() {
    dpo::silence_hdf5_errors();  // the writer below makes HDF5 refuse some calls on purpose
    // In memory where /dev/shm exists: the file is rewritten for every input.
    dir = (fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path()) /
          ("dpo-fuzz-reference-" + std::to_string(getpid()));
    fs::create_directories(dir / "model");
    write_text(dir / "model" / "config.json", "{\"model_type\": \"llama\"}\n");
    write_text(dir / "model" / "model.safetensors", std::string(64, 'w'));
    write_text(dir / "train.jsonl",
               "{\"prompt_input_ids\": [1, 2], \"chosen_input_ids\": [3], \"rejected_input_ids\": [4, 5]}\n"
               "{\"prompt_input_ids\": [6], \"chosen_input_ids\": [7, 8], \"rejected_input_ids\": [9]}\n"
               "{\"prompt_input_ids\": [], \"chosen_input_ids\": [1, 2, 3], \"rejected_input_ids\": [4, 5]}\n");
    write_text(dir / "eval.jsonl",
               "{\"prompt_input_ids\": [1], \"chosen_input_ids\": [2], \"rejected_input_ids\": [3]}\n"
               "{\"prompt_input_ids\": [4, 5], \"chosen_input_ids\": [6], \"rejected_input_ids\": [7, 8]}\n");
    reference_path = (dir / "reference.h5").string();
    const std::string yaml = "run: {output_dir: " + (dir / "out").string() + "}\n" +
                             "model: {policy: " + (dir / "model").string() + "}\n" +
                             "data: {train: " + (dir / "train.jsonl").string() + ", eval: " +
                             (dir / "eval.jsonl").string() + ", max_length: 8, max_prompt_length: 4}\n" +
                             "reference: {logps_path: " + reference_path + "}\n";
    config = dpo::config_from_yaml_text(yaml, {}, "fixture.yaml");
    comm = dpo::make_single_process_communicator();
    want = dpo::expected_provenance(config, true, true, *comm);
    const dpo::TruncationRule rule = dpo::truncation_rule(config.data);
    train.emplace(dpo::PreferenceDataset::load(config.data.train, rule, -1));
    eval.emplace(dpo::PreferenceDataset::load(config.data.eval, rule, -1));
  }
  ~Fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// --- attributes ---------------------------------------------------------------------------------

void string_attribute(hid_t loc, const char* name, const std::string& value, bool variable) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  if (variable) {
    H5Tset_size(type, H5T_VARIABLE);
    Handle a(H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    const char* text = value.c_str();
    H5Awrite(a, type, &text);
    return;
  }
  std::string buffer = value.empty() ? std::string(1, '\0') : value;
  H5Tset_size(type, buffer.size());
  H5Tset_strpad(type, H5T_STR_NULLPAD);
  Handle a(H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  H5Awrite(a, type, buffer.data());
}

void int_attribute(hid_t loc, const char* name, int64_t value, hid_t file_type) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  H5Awrite(a, H5T_NATIVE_INT64, &value);
}

void double_attribute(hid_t loc, const char* name, double value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(loc, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  H5Awrite(a, H5T_NATIVE_DOUBLE, &value);
}

void string_array_attribute(hid_t loc, const char* name, const std::string& value, bool variable) {
  const hsize_t two = 2;
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  Handle space(H5Screate_simple(1, &two, nullptr), H5Sclose);
  const std::string fixed = value + value;  // two elements of value.size() bytes
  const char* texts[2] = {value.c_str(), value.c_str()};
  H5Tset_size(type, variable ? H5T_VARIABLE : std::max<size_t>(value.size(), 1));
  Handle a(H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (variable) {
    H5Awrite(a, type, texts);
  } else if (!value.empty()) {
    H5Awrite(a, type, fixed.data());
  }
}

void array_attribute(hid_t loc, const char* name, int64_t value) {
  const hsize_t two = 2;
  const int64_t values[2] = {value, value};
  Handle space(H5Screate_simple(1, &two, nullptr), H5Sclose);
  Handle a(H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  H5Awrite(a, H5T_NATIVE_INT64, values);
}

// One attribute: usually its right value (so that the checks after it are reached), otherwise
// absent or hostile. `right_int` is set for integer attributes.
void attribute(FuzzedDataProvider& in, hid_t loc, const char* name, const std::string& right_text,
               std::optional<int64_t> right_int) {
  const uint8_t choice = in.ConsumeIntegral<uint8_t>();
  if (choice < 160) {
    if (right_int) {
      int_attribute(loc, name, *right_int, H5T_STD_I64LE);
    } else {
      string_attribute(loc, name, right_text, false);
    }
    return;
  }
  switch (choice % 12) {
    case 0: return;  // absent
    case 1: return string_attribute(loc, name, in.ConsumeRandomLengthString(64), false);
    case 2: return string_attribute(loc, name, right_int ? std::to_string(*right_int) : right_text, true);
    case 3: return int_attribute(loc, name, in.ConsumeIntegral<int64_t>(), H5T_STD_I64LE);
    case 4: return int_attribute(loc, name, in.ConsumeIntegral<int8_t>(), H5T_STD_I8LE);
    case 5: return int_attribute(loc, name, in.ConsumeIntegral<int64_t>(), H5T_STD_U64BE);
    case 6: return double_attribute(loc, name, right_int ? static_cast<double>(*right_int) : 1.0);
    case 7: return array_attribute(loc, name, right_int.value_or(1));
    case 8: return string_attribute(loc, name, right_text + std::string(1, '\0') + "tail", false);
    case 9: return string_array_attribute(loc, name, right_text, false);
    case 10: return string_array_attribute(loc, name, right_text, true);
    default: return string_attribute(loc, name, in.ConsumeRandomLengthString(64), true);
  }
}

// --- datasets -----------------------------------------------------------------------------------

double hostile_double(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegral<uint8_t>() % 12) {
    case 0: return std::numeric_limits<double>::quiet_NaN();
    case 1: return std::numeric_limits<double>::infinity();
    case 2: return -std::numeric_limits<double>::infinity();
    case 3: return -0.0;
    case 4: return std::numeric_limits<double>::denorm_min();
    case 5: return std::numeric_limits<double>::max();
    case 6: return -std::numeric_limits<double>::max();
    case 7: return 1e39;  // finite as float64, inf as float32
    default: return -static_cast<double>(in.ConsumeIntegral<uint16_t>()) / 16.0;  // a plausible log-prob
  }
}

int64_t hostile_int(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegral<uint8_t>() % 8) {
    case 0: return -1;
    case 1: return std::numeric_limits<int64_t>::max();
    case 2: return std::numeric_limits<int64_t>::min();
    case 3: return std::numeric_limits<int32_t>::max() + int64_t{1};
    case 4: return in.ConsumeIntegral<int64_t>();
    default: return in.ConsumeIntegralInRange<int64_t>(0, 16);
  }
}

enum class Kind { Float, Int, Mask };

// One dataset of a split: usually right (the expected class and a width the writer uses) with
// length n, otherwise absent, mismatched or of the wrong shape or kind.
void dataset(FuzzedDataProvider& in, hid_t loc, const char* name, Kind kind, hsize_t n) {
  const hid_t right_type =
      kind == Kind::Float ? H5T_IEEE_F64LE : kind == Kind::Int ? H5T_STD_I32LE : H5T_STD_I8LE;
  hid_t file_type = right_type;
  std::vector<hsize_t> dims = {n};
  const uint8_t choice = in.ConsumeIntegral<uint8_t>();
  if (choice >= 150) {
    switch (choice % 14) {
      case 0: return;  // absent
      case 1: dims[0] = n + 1; break;
      case 2: dims[0] = n > 0 ? n - 1 : 0; break;
      case 3: dims[0] = in.ConsumeIntegralInRange<hsize_t>(0, 64); break;
      case 4: dims = {n, 2}; break;
      case 5: dims.clear(); break;  // scalar dataspace
      case 6: file_type = kind == Kind::Float ? H5T_STD_I64LE : H5T_IEEE_F64LE; break;  // wrong class
      case 7: file_type = kind == Kind::Float ? H5T_IEEE_F32BE : H5T_STD_U64LE; break;    // other width
      case 8: file_type = kind == Kind::Float ? H5T_IEEE_F32LE : H5T_STD_I8LE; break;
      case 9: file_type = H5T_C_S1; break;  // strings
      case 10: {
        Handle group(H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
        return;
      }
      case 11: H5Lcreate_soft("/no/such/object", loc, name, H5P_DEFAULT, H5P_DEFAULT); return;  // dangling
      case 12: dims = {}; dims.push_back(0); break;
      default: {
        dims[0] = hsize_t{1} << in.ConsumeIntegralInRange<int>(16, 40);
        break;
      }
    }
  }
  Handle space(dims.empty() ? H5Screate(H5S_SCALAR)
                            : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose);
  Handle type(H5Tcopy(file_type), H5Tclose);
  if (file_type == H5T_C_S1) H5Tset_size(type, 4);
  Handle set(H5Dcreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  hsize_t elements = 1;
  for (const hsize_t d : dims) elements *= d;
  // Absurd datasets stay unwritten (HDF5 reads them as fill values); the rest get values.
  if (!set.valid() || elements == 0 || elements > (hsize_t{1} << 16) || file_type == H5T_C_S1) return;
  // A short pattern from the input, repeated: the values that matter are in the first few.
  const size_t pattern = std::min<hsize_t>(elements, 16);
  if (kind == Kind::Float && H5Tget_class(type) == H5T_FLOAT) {
    std::vector<double> values(elements);
    for (size_t i = 0; i < pattern; ++i) values[i] = hostile_double(in);
    for (size_t i = pattern; i < elements; ++i) values[i] = values[i % pattern];
    H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  } else {
    std::vector<int64_t> values(elements);
    for (size_t i = 0; i < pattern; ++i) values[i] = kind == Kind::Mask && in.ConsumeIntegral<uint8_t>() < 200 ? 1 : hostile_int(in);
    for (size_t i = pattern; i < elements; ++i) values[i] = values[i % pattern];
    if (H5Tget_class(type) == H5T_FLOAT) {
      std::vector<double> as_double(values.begin(), values.end());
      H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, as_double.data());
    } else {
      H5Dwrite(set, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    }
  }
}

void split(FuzzedDataProvider& in, hid_t loc, hsize_t right_n) {
  hsize_t n = right_n;
  if (in.ConsumeIntegral<uint8_t>() >= 200) n = in.ConsumeIntegralInRange<hsize_t>(0, 8);
  dataset(in, loc, "chosen_logps", Kind::Float, n);
  dataset(in, loc, "rejected_logps", Kind::Float, n);
  dataset(in, loc, "chosen_lengths", Kind::Int, n);
  dataset(in, loc, "rejected_lengths", Kind::Int, n);
  if (in.ConsumeBool()) dataset(in, loc, "filled", Kind::Mask, n);
}

void write_file(FuzzedDataProvider& in, const std::string& path) {
  const Fixture& fx = fixture();
  Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) broken("cannot create the HDF5 file (is the temporary directory full?)");
  const dpo::ReferenceProvenance& p = fx.want;
  attribute(in, file, "format", dpo::kReferenceFormat, std::nullopt);
  attribute(in, file, "version", "", dpo::kReferenceFormatVersion);
  attribute(in, file, "dataset", p.dataset, std::nullopt);
  attribute(in, file, "dataset_fingerprint", p.dataset_fingerprint, std::nullopt);
  attribute(in, file, "eval_dataset", p.eval_dataset, std::nullopt);
  attribute(in, file, "eval_dataset_fingerprint", p.eval_dataset_fingerprint, std::nullopt);
  attribute(in, file, "eval_examples", "", static_cast<int64_t>(fx.eval->size()));
  attribute(in, file, "model", p.model, std::nullopt);
  attribute(in, file, "model_fingerprint", p.model_fingerprint, std::nullopt);
  attribute(in, file, "truncation", p.truncation, std::nullopt);
  attribute(in, file, "dtype", p.dtype, std::nullopt);
  attribute(in, file, "device", p.device, std::nullopt);
  attribute(in, file, "tool_version", p.tool_version, std::nullopt);
  attribute(in, file, "created", p.created, std::nullopt);
  attribute(in, file, "examples", "", static_cast<int64_t>(fx.train->size()));
  split(in, file, fx.train->size());
  switch (in.ConsumeIntegral<uint8_t>() % 4) {
    case 0: break;  // no eval group
    case 1: dataset(in, file, "eval", Kind::Float, 2); break;  // `eval` is not a group
    default: {
      Handle group(H5Gcreate2(file, "eval", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      split(in, group, fx.eval->size());
    }
  }
}

// --- checks -------------------------------------------------------------------------------------

void check_split(const dpo::ReferenceSplit& s, bool require_complete) {
  const size_t n = s.size();
  if (s.rejected.size() != n || s.chosen_lengths.size() != n || s.rejected_lengths.size() != n ||
      s.filled.size() != n)
    broken("an accepted file's datasets differ in length");
  if (!require_complete) return;
  if (s.unfilled() != 0) broken("an incomplete file was accepted as complete");
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(s.chosen[i]) || !std::isfinite(s.rejected[i])) broken("a non-finite value was accepted");
}

bool same_as_float(double stored, float served) {
  if (std::fabs(stored) > FLT_MAX) return std::fabs(served) >= FLT_MAX && std::signbit(served) == std::signbit(stored);
  return served == static_cast<float>(stored);
}

void check_lookups(FuzzedDataProvider& in, const dpo::ReferenceStore& store, dpo::Split which) {
  const Fixture& fx = fixture();
  const dpo::PreferenceDataset& data = which == dpo::Split::Train ? *fx.train : *fx.eval;
  store.require_examples(which, data);  // may refuse: then the lookups are never made
  const dpo::ReferenceSplit& values = which == dpo::Split::Train ? store.file().train : *store.file().eval;
  std::vector<int64_t> indices(in.ConsumeIntegralInRange<size_t>(0, 6));
  bool all_in_range = true;
  for (int64_t& i : indices) {
    i = in.ConsumeIntegralInRange<int64_t>(-2, static_cast<int64_t>(values.size()) + 2);
    all_in_range = all_in_range && i >= 0 && i < static_cast<int64_t>(values.size());
  }
  dpo::PairLogps got;
  try {
    got = store.logps(which, indices, at::kCPU);
  } catch (const dpo::Error&) {
    if (all_in_range) broken("a lookup of stored examples was refused");
    return;
  }
  if (!all_in_range) broken("a lookup out of range was served");
  const auto c = got.chosen.accessor<float, 1>(), r = got.rejected.accessor<float, 1>();
  const auto ct = got.chosen_tokens.accessor<int64_t, 1>(), rt = got.rejected_tokens.accessor<int64_t, 1>();
  for (size_t k = 0; k < indices.size(); ++k) {
    const auto i = static_cast<size_t>(indices[k]);
    const auto kk = static_cast<int64_t>(k);
    if (!same_as_float(values.chosen[i], c[kk]) || !same_as_float(values.rejected[i], r[kk]) ||
        ct[kk] != values.chosen_lengths[i] || rt[kk] != values.rejected_lengths[i])
      broken("the store served values other than the stored ones");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& fx = fixture();
  FuzzedDataProvider in(data, size);
  write_file(in, fx.reference_path);
  const std::string& path = fx.reference_path;

  dpo::is_reference_file(path);
  for (const bool require_complete : {false, true}) {
    try {
      const dpo::ReferenceFile f = dpo::read_reference_file(path, require_complete);
      check_split(f.train, require_complete);
      if (f.eval) check_split(*f.eval, require_complete);
    } catch (const dpo::Error&) {
    }
  }
  try {
    dpo::describe_reference_file(path);
  } catch (const dpo::Error&) {
  }
  const bool check_train = in.ConsumeBool(), check_eval = in.ConsumeBool();
  try {
    const dpo::ReferenceStore store = dpo::ReferenceStore::open(fx.config, check_train, check_eval, *fx.comm);
    if (check_eval && !store.file().eval) broken("a store without eval group was opened for eval");
    try {
      check_lookups(in, store, dpo::Split::Train);
    } catch (const dpo::Error&) {
    }
    if (store.file().eval) check_lookups(in, store, dpo::Split::Eval);
  } catch (const dpo::Error&) {
  }
  return 0;
}
