// RAII ownership of HDF5 identifiers, shared by the HDF5 readers and writers of dpo, and the two
// policies every dpo HDF5 file follows: files are opened without file locking (unless
// HDF5_USE_FILE_LOCKING says otherwise), and files are written in memory, then to disk by the
// durable writer (dpo/durable_file.h).
#pragma once
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "dpo/error.h"

#include <hdf5.h>

namespace dpo {

// Owns one hid_t and closes it with the matching H5?close on every exit path.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)), close_(other.close_) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle& operator=(Handle&&) = delete;
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now; false if HDF5 reports a failure (for a written object: data that did not arrive).
  bool close() {
    const hid_t id = std::exchange(id_, H5I_INVALID_HID);
    return id < 0 || close_(id) >= 0;
  }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// HDF5 prints an error stack to stderr by default; dpo reports each problem as one dpo::Error.
inline void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// A dataset's declared length is only a number in its header: before a reader allocates for it,
// the bytes it declares must be backed by bytes stored in the file (deflate, the one filter that
// shrinks data this much, stays under ~1100:1), and the stored bytes must fit in the file.
inline void require_stored_length(hid_t dataset, hsize_t length, const std::string& file, const std::string& where) {
  if (length == 0) return;
  Handle type(H5Dget_type(dataset), H5Tclose);
  Handle file_id(H5Iget_file_id(dataset), H5Fclose);
  Handle create_plist(H5Dget_create_plist(dataset), H5Pclose);
  const size_t element = type.valid() ? H5Tget_size(type) : 0;
  hsize_t file_size = 0;
  if (!file_id.valid() || H5Fget_filesize(file_id, &file_size) < 0 || element == 0 || !create_plist.valid())
    fail("{}: cannot inspect {} (damaged file?)", file, where);
  const bool filtered = H5Pget_nfilters(create_plist) > 0;
  const hsize_t stored = H5Dget_storage_size(dataset);
  const double declared = static_cast<double>(length) * static_cast<double>(element);
  const double backed = static_cast<double>(stored) * (filtered ? 1100.0 : 1.0);
  if (stored > file_size || declared > backed)
    fail("{}: {} declares {} elements ({:.0f} bytes) but the {}-byte file stores {} bytes of it (truncated or "
         "damaged)", file, where, length, declared, file_size, stored);
}

// File access properties for every H5Fopen of dpo: file locking off, so that files on Lustre or
// NFS mounts without flock open (dpo never reads a file while it is written: writers rename
// finished files into place). HDF5_USE_FILE_LOCKING, when set, overrides this (HDF5 reads it).
hid_t file_access_properties();

// Call right after an H5Fopen failed: throws "cannot lock" naming `path` if HDF5 could not lock
// the file (another process holds it, or the file system has no locks), instead of letting the
// caller report a damaged file.
void fail_if_lock_refused(const std::string& path);

// Throws naming `path` and `what` if an HDF5 call returned a negative status or identifier.
void check_hdf5(long long status, const std::string& path, const char* what);

// Builds an HDF5 file in memory (HDF5's core driver, `size_hint` bytes to start with), lets `fill`
// write its contents, then writes the file image to `path` with write_file_durably. HDF5 1.10
// itself mishandles a full disk (a failed H5Dclose followed by an H5Fflush that succeeds; a
// failed H5Fclose that leaves an identifier which crashes the library at exit), so it never
// writes to disk in dpo: every byte goes through checked write(2) and fsync(2) calls instead.
// The price is the file's size in memory, twice, while it is written.
void write_hdf5_durably(const std::string& path, size_t size_hint, const std::function<void(hid_t file)>& fill);

// A scalar string attribute (fixed length, NUL-padded; "" is stored as one NUL); an error naming
// `path` and the attribute when HDF5 refuses it.
void write_string_attribute(hid_t loc, const char* name, const std::string& value, const std::string& path);
// Whether an attribute holds exactly one value (H5Aread writes every element it holds).
bool holds_one_value(hid_t attribute);
// A scalar string attribute, fixed or variable length; nullopt when absent or of another kind.
std::optional<std::string> read_string_attribute(hid_t loc, const char* name);

}  // namespace dpo
