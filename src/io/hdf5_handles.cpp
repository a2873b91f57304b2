#include "dpo/io/hdf5_handles.h"

#include <algorithm>
#include <cstring>
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

}  // namespace dpo
