// TensorBoard event files: TFRecord framing (record_frame) of serialized TensorFlow `Event`
// protos (the messages and field numbers of src/watch/tensorboard_event.proto), written
// durably. This module knows the file format, not what a run logs (train/tensorboard_log.h
// names the scalars).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dpo {

// One TFRecord: uint64 little-endian length of `data`, uint32 masked CRC-32C of those 8 bytes,
// `data`, uint32 masked CRC-32C of `data` (every integer little-endian).
std::string record_frame(std::string_view data);

// The prefix of every event file name, TensorFlow's: TensorBoard reads the files of a directory
// that contain "tfevents", in the order of their names.
constexpr const char* kEventFilePrefix = "events.out.tfevents.";

// One new event file in a directory, appended to record by record. Each add_* call appends its
// whole record with one write and fsyncs it before returning, so a kill leaves at most a
// truncated last record, which TensorBoard's readers treat as not yet written; the file is never
// appended to by a later process (a resumed run opens a new one).
class EventFileWriter {
 public:
  // Creates `dir` if needed and `<dir>/events.out.tfevents.<unix seconds>.<hostname>.<pid>.<n>`
  // (TensorFlow's name), whose seconds are raised above those of every event file already in
  // `dir` if need be, so that it sorts after them; writes its first record, an Event with
  // file_version "brain.Event:2".
  explicit EventFileWriter(const std::string& dir);
  const std::string& path() const { return path_; }

  // A SessionLog START at `step`: TensorBoard (the Python loader) drops the points of every tag
  // at steps >= `step` read before it, the orphans of a run that was resumed from an earlier step.
  void add_session_start(int64_t step) const;
  // One Event at `step` whose Summary holds each (tag, value) as simple_value (float32).
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values) const;
  // One Event at `step` with `text` as the text plugin's string tensor under `tag`.
  void add_text(int64_t step, const std::string& tag, const std::string& text) const;

 private:
  void append(const std::string& serialized_event) const;
  std::string path_;
};

}  // namespace dpo
