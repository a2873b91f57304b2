#include "dpo/io/hdf5_handles.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "dpo/error.h"
#include "dpo/io/durable_file.h"

namespace dpo {
namespace {

// The error stack's text of a refused file lock ("unable to lock file, errno = 11, ..."), or "".
herr_t find_lock_error(unsigned /*depth*/, const H5E_error2_t* error, void* found) {
  auto* text = static_cast<std::string*>(found);
  const bool lock_error = error->min_num == H5E_CANTLOCKFILE ||
                          (error->desc && std::strstr(error->desc, "unable to lock") != nullptr);
  // The innermost entry (the first walked upward) carries the system's reason.
  if (lock_error && text->empty()) *text = error->desc ? error->desc : "unable to lock the file";
  return 0;
}

}  // namespace

hid_t file_access_properties() {
  static const hid_t properties = [] {
    const hid_t list = H5Pcreate(H5P_FILE_ACCESS);
    // use_file_locking=false; ignore_when_disabled=true (a file system without locks is fine).
    if (list >= 0) H5Pset_file_locking(list, false, true);
    return list;
  }();
  return properties >= 0 ? properties : H5P_DEFAULT;
}

void fail_if_lock_refused(const std::string& path) {
  std::string reason;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, find_lock_error, &reason);
  if (!reason.empty())
    fail("{}: cannot lock the file ({}): another process holds it, or the file system has no locks; set "
         "HDF5_USE_FILE_LOCKING=FALSE to read it without locking",
         path, reason);
}

void check_hdf5(long long status, const std::string& path, const char* what) {
  if (status < 0) fail("{}: HDF5 could not {}", path, what);
}

void write_hdf5_durably(const std::string& path, size_t size_hint, const std::function<void(hid_t file)>& fill) {
  silence_hdf5_errors();
  std::vector<char> image;
  {
    Handle properties(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    check_hdf5(properties, path, "create file access properties");
    // backing_store=false: the file lives only in memory until its image is taken below.
    const size_t increment = std::clamp<size_t>(size_hint, size_t{1} << 16, size_t{1} << 26);
    check_hdf5(H5Pset_fapl_core(properties, increment, false), path, "select the in-memory driver");
    Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, properties), H5Fclose);
    check_hdf5(file, path, "create the file (in memory)");
    fill(file);
    check_hdf5(H5Fflush(file, H5F_SCOPE_GLOBAL), path, "flush the file (in memory)");
    const ssize_t size = H5Fget_file_image(file, nullptr, 0);
    check_hdf5(size, path, "measure the file image");
    image.resize(static_cast<size_t>(size));
    check_hdf5(H5Fget_file_image(file, image.data(), image.size()), path, "copy the file image");
    if (!file.close()) fail("{}: HDF5 could not close the file (in memory)", path);
  }
  write_file_durably(path, std::string_view(image.data(), image.size()));
}

void write_string_attribute(hid_t loc, const char* name, const std::string& value, const std::string& path) {
  std::string buffer = value.empty() ? std::string(1, '\0') : value;
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  if (!type.valid() || H5Tset_size(type, buffer.size()) < 0 || H5Tset_strpad(type, H5T_STR_NULLPAD) < 0 || !space.valid())
    fail("{}: cannot write attribute {}", path, name);
  Handle attribute(H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attribute.valid() || H5Awrite(attribute, type, buffer.data()) < 0 || !attribute.close())
    fail("{}: cannot write attribute {}", path, name);
}

// H5Aread writes every element: an attribute that holds an array is not the one value the readers
// below have room for.
bool holds_one_value(hid_t attribute) {
  Handle space(H5Aget_space(attribute), H5Sclose);
  return space.valid() && H5Sget_simple_extent_npoints(space) == 1;
}

std::optional<std::string> read_string_attribute(hid_t loc, const char* name) {
  if (H5Aexists(loc, name) <= 0) return std::nullopt;
  Handle attribute(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  if (!attribute.valid() || !holds_one_value(attribute)) return std::nullopt;
  Handle type(H5Aget_type(attribute), H5Tclose);
  if (H5Tget_class(type) != H5T_STRING) return std::nullopt;
  if (H5Tis_variable_str(type) > 0) {
    Handle memory(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(memory, H5T_VARIABLE);
    char* text = nullptr;
    if (H5Aread(attribute, memory, &text) < 0) return std::nullopt;
    std::string out = text ? text : "";
    H5free_memory(text);
    return out;
  }
  std::string buffer(H5Tget_size(type), '\0');
  if (H5Aread(attribute, type, buffer.data()) < 0) return std::nullopt;
  return buffer.substr(0, buffer.find('\0'));
}

}  // namespace dpo
