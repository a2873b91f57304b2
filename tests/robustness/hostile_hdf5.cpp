// Writes one malformed HDF5 file for the robustness suite: `hostile_hdf5 KIND OUT`. The files are
// well-formed HDF5 whose contents break the preference-data or reference-log-prob layout in one
// way each (the suite makes truncated and non-HDF5 files with plain shell tools). Uses only the
// HDF5 C API, so the suite needs no Python HDF5 package.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <hdf5.h>

namespace {

hid_t write_1d(hid_t loc, const char* name, hid_t file_type, hid_t memory_type, const void* data, hsize_t n) {
  const hid_t space = H5Screate_simple(1, &n, nullptr);
  const hid_t dataset = H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (n > 0) H5Dwrite(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  H5Sclose(space);
  return dataset;
}

void ints(hid_t loc, const char* name, const std::vector<int32_t>& v) {
  H5Dclose(write_1d(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, v.data(), v.size()));
}
void longs(hid_t loc, const char* name, const std::vector<int64_t>& v) {
  H5Dclose(write_1d(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, v.data(), v.size()));
}
void doubles(hid_t loc, const char* name, const std::vector<double>& v) {
  H5Dclose(write_1d(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v.data(), v.size()));
}

// A chunked dataset that declares `n` elements and stores none of them: its header alone says
// "allocate n x 8 bytes".
void declared_only(hid_t loc, const char* name, hid_t type, hsize_t n) {
  const hsize_t max = H5S_UNLIMITED, chunk = 1024;
  const hid_t space = H5Screate_simple(1, &n, &max);
  const hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(plist, 1, &chunk);
  H5Dclose(H5Dcreate2(loc, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT));
  H5Pclose(plist);
  H5Sclose(space);
}

void string_attribute(hid_t loc, const char* name, const std::string& value) {
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, value.size());
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t attribute = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(attribute, type, value.data());
  H5Aclose(attribute);
  H5Sclose(space);
  H5Tclose(type);
}

void int_attribute(hid_t loc, const char* name, int64_t value) {
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t attribute = H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(attribute, H5T_NATIVE_INT64, &value);
  H5Aclose(attribute);
  H5Sclose(space);
}

// Preference data: 2 pairs, prompt [1 2], [3]; chosen [4], [5 6]; rejected [7], [8]. `kind`
// breaks one dataset of /chosen.
void preference_file(hid_t file, const std::string& kind) {
  const char* groups[3] = {"prompt", "chosen", "rejected"};
  const std::vector<int32_t> tokens[3] = {{1, 2, 3}, {4, 5, 6}, {7, 8}};
  const std::vector<int64_t> offsets[3] = {{0, 2, 3}, {0, 1, 3}, {0, 1, 2}};
  for (int g = 0; g < 3; ++g) {
    if (kind == "pref_missing_group" && g == 2) continue;
    const hid_t group = H5Gcreate2(file, groups[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    std::vector<int32_t> t = tokens[g];
    std::vector<int64_t> o = offsets[g];
    const bool target = g == 1;
    if (target && kind == "pref_offsets_decreasing") o = {0, 3, 1};
    if (target && kind == "pref_offsets_start") o = {1, 2, 3};
    if (target && kind == "pref_offsets_past_tokens") o = {0, 1, 30};
    if (target && kind == "pref_offsets_negative") o = {0, -5, 3};
    if (target && kind == "pref_count_mismatch") o = {0, 3};
    if (target && kind == "pref_empty_response") o = {0, 0, 3};
    if (target && kind == "pref_negative_id") t = {4, -5, 6};
    if (target && kind == "pref_empty_offsets") o = {};
    if (kind == "pref_zero_records") { o = {0}; t = {}; }
    if (target && kind == "pref_float_tokens") {
      const std::vector<float> f = {4, 5, 6};
      H5Dclose(write_1d(group, "tokens", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, f.data(), f.size()));
    } else if (target && kind == "pref_wide_id") {
      longs(group, "tokens", {4, int64_t{1} << 40, 6});
    } else if (target && kind == "pref_tokens_2d") {
      const hsize_t dims[2] = {3, 1};
      const hid_t space = H5Screate_simple(2, dims, nullptr);
      const hid_t d = H5Dcreate2(group, "tokens", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data());
      H5Dclose(d);
      H5Sclose(space);
    } else if (target && kind == "pref_huge_tokens") {
      declared_only(group, "tokens", H5T_STD_I32LE, hsize_t{1} << 40);
    } else if (target && kind == "pref_tokens_group") {
      H5Gclose(H5Gcreate2(group, "tokens", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    } else if (!(target && kind == "pref_missing_tokens")) {
      ints(group, "tokens", t);
    }
    if (target && kind == "pref_huge_offsets") {
      declared_only(group, "offsets", H5T_STD_I64LE, hsize_t{1} << 40);
    } else if (target && kind == "pref_huge_tokens") {  // offsets and tokens agree on 2^40 tokens
      longs(group, "offsets", {0, 1, int64_t{1} << 40});
    } else {
      longs(group, "offsets", o);
    }
    H5Gclose(group);
  }
}

// Reference log-probs: 2 pairs, complete, with the format attributes; `kind` breaks one thing.
void reference_file(hid_t file, const std::string& kind) {
  if (kind != "ref_no_format") string_attribute(file, "format", "dpo-reference-logps");
  int_attribute(file, "version", kind == "ref_version" ? 99 : 1);
  std::vector<double> chosen = {-3.5, -2.0}, rejected = {-4.0, -1.5};
  std::vector<int32_t> chosen_lengths = {2, 3}, rejected_lengths = {1, 2};
  if (kind == "ref_nan") chosen[1] = std::nan("");
  if (kind == "ref_inf") rejected[0] = -INFINITY;
  if (kind == "ref_zero_length") rejected_lengths[1] = 0;
  if (kind == "ref_negative_length") chosen_lengths[0] = -7;
  if (kind == "ref_short") rejected.pop_back();
  if (kind == "ref_int_logps") {
    ints(file, "chosen_logps", {-3, -2});
  } else if (kind == "ref_huge_logps") {
    declared_only(file, "chosen_logps", H5T_IEEE_F64LE, hsize_t{1} << 40);
  } else if (kind != "ref_missing") {
    doubles(file, "chosen_logps", chosen);
  }
  doubles(file, "rejected_logps", rejected);
  if (kind == "ref_wide_length") {
    longs(file, "chosen_lengths", {2, int64_t{1} << 40});
  } else if (kind == "ref_float_lengths") {
    doubles(file, "chosen_lengths", {2.0, 3.0});
  } else {
    ints(file, "chosen_lengths", chosen_lengths);
  }
  ints(file, "rejected_lengths", rejected_lengths);
  if (kind == "ref_unfilled") {
    const std::vector<int8_t> filled = {1, 0};
    H5Dclose(write_1d(file, "filled", H5T_STD_I8LE, H5T_NATIVE_INT8, filled.data(), filled.size()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: hostile_hdf5 KIND OUT\n");
    return 2;
  }
  const std::string kind = argv[1];
  const hid_t file = H5Fcreate(argv[2], H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file < 0) return 1;
  if (kind.rfind("pref_", 0) == 0) {
    preference_file(file, kind);
  } else if (kind.rfind("ref_", 0) == 0) {
    reference_file(file, kind);
  } else {
    std::fprintf(stderr, "hostile_hdf5: unknown kind %s\n", kind.c_str());
    return 2;
  }
  return H5Fclose(file) < 0 ? 1 : 0;
}
