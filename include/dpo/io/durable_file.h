// Durable writes: every file and directory that dpo writes appears under its final name only when
// it is whole and on stable storage, and every failed write ends in a dpo::Error naming the file
// and the system's reason ("No space left on device", "Read-only file system", "Disk quota
// exceeded", "Permission denied"). The pattern for every writer:
//
//   TemporaryPath tmp(final_path);          // <final>.tmp-<pid>, removed again on any error
//   SyncedFile out(tmp.path()); out.write(...); out.finish();   // write all, fsync, close
//   tmp.commit();                           // fsync, rename into place, fsync the directory
//
// A kill at any moment leaves at most a `.tmp-<pid>` name behind, which readers never open.
// This module owns the system calls of writing; it knows nothing of the formats written.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace dpo {

// `final_path + ".tmp-<pid>"`: where a file or directory is written before it is committed.
std::string temporary_path_for(const std::string& final_path);

// Whether a file or directory name is one of temporary_path_for's (a leftover of a killed write).
bool is_temporary_name(const std::string& name);

// One file written from scratch (created or truncated). Every write, the fsync and the close
// are checked; a failure throws naming the file and errno's text.
class SyncedFile {
 public:
  explicit SyncedFile(std::string path);
  SyncedFile(const SyncedFile&) = delete;
  SyncedFile& operator=(const SyncedFile&) = delete;
  ~SyncedFile();  // closes without syncing if finish() was not reached (the caller is unwinding)

  void write(const void* data, size_t size);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // fsync, then close: a network file system may report a full disk or quota only here.
  void finish();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// Writes `bytes` as the whole content of a new file at `path`, fsynced (no rename: for files
// inside a temporary directory that is committed as a whole).
void write_synced_file(const std::string& path, std::string_view bytes);

// Replaces the file `path` by one holding `bytes`, durably (temporary file, fsync, rename, fsync
// of the directory). Readers see the old content or the new one, never a mix.
void write_file_durably(const std::string& path, std::string_view bytes);

// Appends `text` to `path` (created if missing) and fsyncs it, for line-per-step logs.
void append_durably(const std::string& path, std::string_view text);

// fsync of an existing file, or of a directory (which makes the names in it durable).
void sync_file(const std::string& path);
void sync_directory(const std::string& dir);

// create_directories that fsyncs the parent of every directory it creates, so that a committed
// file's whole path survives a crash; a failure throws naming the directory.
void make_directories(const std::string& dir);

// Renames `tmp` (a file, or a directory of files) to `final_path` durably: fsyncs tmp's files and
// tmp itself, renames (replacing an existing file or directory at final_path), fsyncs the parent.
void commit_path(const std::string& tmp, const std::string& final_path);

// Removes a file or directory tree so that it leaves its name at once: it is renamed to a
// temporary name (durably) before its files go, so a kill in the middle leaves a `.tmp-` name,
// never a partial tree under `path`. A missing `path` is not an error.
void remove_path(const std::string& path);

// A temporary name for `final_path` whose file or directory tree is removed when the scope is left
// without commit(): after an error (a full disk, an exception) nothing half-written stays behind.
class TemporaryPath {
 public:
  explicit TemporaryPath(std::string final_path);  // removes a leftover of the same name first
  TemporaryPath(const TemporaryPath&) = delete;
  TemporaryPath& operator=(const TemporaryPath&) = delete;
  ~TemporaryPath();

  const std::string& path() const { return tmp_; }
  const std::string& final_path() const { return final_; }
  void commit();  // commit_path(path(), final_path())

 private:
  std::string final_, tmp_;
  bool committed_ = false;
};

}  // namespace dpo
