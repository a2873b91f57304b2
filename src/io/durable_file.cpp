#include "dpo/io/durable_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include "dpo/error.h"

namespace dpo {
namespace fs = std::filesystem;
namespace {

constexpr const char* kTemporaryMark = ".tmp-";

std::string errno_text(int error) { return std::strerror(error); }

std::string without_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::string parent_directory(const std::string& path) {
  const fs::path parent = fs::path(without_trailing_slashes(path)).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// fsync through a fresh descriptor: Linux syncs the inode's dirty pages whoever wrote them.
void sync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) fail("{}: cannot open to sync it to disk: {}", path, errno_text(errno));
  int result;
  do result = ::fsync(fd);
  while (result != 0 && errno == EINTR);
  const int error = errno;
  ::close(fd);
  // Some file systems (FUSE mounts, CIFS) cannot fsync a directory and say so with EINVAL:
  // there is nothing more to make durable than what they already did.
  if (result != 0 && !(directory && (error == EINVAL || error == ENOTSUP || error == EOPNOTSUPP)))
    fail("{}: cannot sync to disk: {}", path, errno_text(error));
}

// The files and directories of a temporary directory that is about to be committed, synced.
void sync_tree(const std::string& dir) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_symlink(ec)) continue;
    if (it->is_directory(ec)) sync_path(it->path().string(), true);
    else if (it->is_regular_file(ec)) sync_path(it->path().string(), false);
  }
  if (ec) fail("{}: cannot list to sync it to disk: {}", dir, ec.message());
  sync_path(dir, true);
}

// write(2) until every byte is out: it may write less than asked (signals, pipes, quotas).
void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written = ::write(fd, bytes, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      fail("{}: cannot write: {}", path, errno_text(errno));
    }
    if (written == 0) fail("{}: cannot write: the file system accepted no bytes", path);
    bytes += written;
    size -= static_cast<size_t>(written);
  }
}

// fsync, then close: a network file system may report a full disk or quota only here. close(2)
// is not retried on EINTR (the descriptor is gone either way).
void sync_and_close(int fd, const std::string& path) {
  int result;
  do result = ::fsync(fd);
  while (result != 0 && errno == EINTR);
  if (result != 0) {
    const int error = errno;
    ::close(fd);
    fail("{}: cannot sync to disk: {}", path, errno_text(error));
  }
  if (::close(fd) != 0 && errno != EINTR) fail("{}: cannot close: {}", path, errno_text(errno));
}

void rename_or_fail(const std::string& from, const std::string& to, const std::string& final_path) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    fail("{}: cannot rename {} to {}: {}", final_path, from, to, errno_text(errno));
}

}  // namespace

std::string temporary_path_for(const std::string& final_path) {
  return fmt::format("{}{}{}", without_trailing_slashes(final_path), kTemporaryMark, static_cast<long>(getpid()));
}

bool is_temporary_name(const std::string& name) { return name.find(kTemporaryMark) != std::string::npos; }

SyncedFile::SyncedFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot create: {}", path_, errno_text(errno));
}

SyncedFile::~SyncedFile() {
  if (fd_ >= 0) ::close(fd_);
}

void SyncedFile::write(const void* data, size_t size) {
  if (fd_ < 0) fail("{}: internal: write after finish()", path_);
  write_all(fd_, data, size, path_);
}

void SyncedFile::finish() {
  if (fd_ < 0) fail("{}: internal: finish() called twice", path_);
  sync_and_close(std::exchange(fd_, -1), path_);
}

void write_synced_file(const std::string& path, std::string_view bytes) {
  SyncedFile out(path);
  out.write(bytes);
  out.finish();
}

void write_file_durably(const std::string& path, std::string_view bytes) {
  TemporaryPath tmp(path);
  write_synced_file(tmp.path(), bytes);
  tmp.commit();
}

void append_durably(const std::string& path, std::string_view text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot open for appending: {}", path, errno_text(errno));
  try {
    write_all(fd, text.data(), text.size(), path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  sync_and_close(fd, path);
}

void sync_file(const std::string& path) { sync_path(path, false); }

void sync_directory(const std::string& dir) { sync_path(dir, true); }

void make_directories(const std::string& dir) {
  std::vector<fs::path> missing;  // innermost first
  std::error_code ec;
  for (fs::path p = fs::path(without_trailing_slashes(dir)); !p.empty(); p = p.parent_path()) {
    if (fs::exists(p, ec)) {
      if (!fs::is_directory(p, ec)) fail("{}: cannot create directory: {} is not a directory", dir, p.string());
      break;
    }
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0755) != 0 && errno != EEXIST)
      fail("{}: cannot create directory: {}", it->string(), errno_text(errno));
    sync_directory(parent_directory(it->string()));
  }
}

void commit_path(const std::string& tmp, const std::string& final_path_in) {
  const std::string final_path = without_trailing_slashes(final_path_in);
  std::error_code ec;
  const bool tmp_is_directory = fs::is_directory(tmp, ec);
  if (tmp_is_directory) sync_tree(tmp);
  else sync_file(tmp);
  if (fs::is_directory(final_path, ec) && tmp_is_directory) {
    // A directory cannot be replaced atomically: move the old one aside first, then drop it.
    const std::string old = temporary_path_for(final_path) + ".old";
    fs::remove_all(old, ec);
    rename_or_fail(final_path, old, final_path);
    rename_or_fail(tmp, final_path, final_path);
    sync_directory(parent_directory(final_path));
    fs::remove_all(old, ec);
    return;
  }
  rename_or_fail(tmp, final_path, final_path);
  sync_directory(parent_directory(final_path));
}

void remove_path(const std::string& path_in) {
  const std::string path = without_trailing_slashes(path_in);
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) return;
  const std::string doomed = temporary_path_for(path) + ".old";
  fs::remove_all(doomed, ec);
  rename_or_fail(path, doomed, path);
  sync_directory(parent_directory(path));
  fs::remove_all(doomed, ec);
  if (ec) fail("{}: cannot remove {}: {}", path, doomed, ec.message());
}

TemporaryPath::TemporaryPath(std::string final_path)
    : final_(without_trailing_slashes(std::move(final_path))), tmp_(temporary_path_for(final_)) {
  std::error_code ec;
  fs::remove_all(tmp_, ec);  // a leftover of a killed process that had our pid
  if (ec) fail("{}: cannot remove the leftover temporary {}: {}", final_, tmp_, ec.message());
}

TemporaryPath::~TemporaryPath() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);  // best effort while unwinding; a leftover is only a .tmp- name
}

void TemporaryPath::commit() {
  commit_path(tmp_, final_);
  committed_ = true;
}

}  // namespace dpo
