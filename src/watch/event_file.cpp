#include "dpo/watch/event_file.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>

#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/watch/crc32c.h"
#include "tensorboard_event.pb.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;
namespace pb = dpo::tensorboard;

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFFu));
}

double wall_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// The seconds field of the new file's name: now, or one more than the largest of the event files
// already in `dir` (a resume within the same second, or a clock set back, would otherwise sort
// the new file before the one it supersedes).
long long name_seconds(const fs::path& dir) {
  long long seconds = static_cast<long long>(wall_time_now());
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kEventFilePrefix, 0) != 0) continue;
    const char* digits = name.c_str() + std::char_traits<char>::length(kEventFilePrefix);
    char* end = nullptr;
    const long long existing = std::strtoll(digits, &end, 10);
    if (end != digits && existing >= seconds) seconds = existing + 1;
  }
  return seconds;
}

pb::Event event_at(int64_t step) {
  pb::Event event;
  event.set_wall_time(wall_time_now());
  event.set_step(step);
  return event;
}

}  // namespace

std::string record_frame(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 16);
  put_le(out, data.size(), 8);
  put_le(out, masked_crc32c(out.data(), 8), 4);
  out.append(data);
  put_le(out, masked_crc32c(data.data(), data.size()), 4);
  return out;
}

EventFileWriter::EventFileWriter(const std::string& dir) {
  make_directories(dir);
  static std::atomic<int> files_opened{0};  // the <n> of the name: this process's count
  path_ = (fs::path(dir) / fmt::format("{}{}.{}.{}.{}", kEventFilePrefix, name_seconds(dir), host_name(),
                                       static_cast<long>(::getpid()), files_opened++))
              .string();
  pb::Event event = event_at(0);
  event.set_file_version("brain.Event:2");
  append(event.SerializeAsString());
  sync_directory(dir);  // the new name itself survives a crash
}

void EventFileWriter::add_session_start(int64_t step) const {
  pb::Event event = event_at(step);
  event.mutable_session_log()->set_status(pb::SessionLog::START);
  append(event.SerializeAsString());
}

void EventFileWriter::add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values) const {
  pb::Event event = event_at(step);
  pb::Summary* summary = event.mutable_summary();
  for (const auto& [tag, value] : values) {
    pb::Summary::Value* v = summary->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));
  }
  append(event.SerializeAsString());
}

void EventFileWriter::add_text(int64_t step, const std::string& tag, const std::string& text) const {
  pb::Event event = event_at(step);
  pb::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  // The text plugin's metadata (plugin "text", content: its version-0 data, which is empty) on a
  // rank-0 DT_STRING tensor, as TensorFlow's text summary writes it.
  pb::SummaryMetadata* metadata = v->mutable_metadata();
  metadata->mutable_plugin_data()->set_plugin_name("text");
  metadata->set_data_class(pb::DATA_CLASS_TENSOR);
  pb::TensorProto* tensor = v->mutable_tensor();
  tensor->set_dtype(pb::DT_STRING);
  tensor->mutable_tensor_shape();  // present and empty: a scalar
  tensor->add_string_val(text);
  append(event.SerializeAsString());
}

void EventFileWriter::append(const std::string& serialized_event) const {
  append_durably(path_, record_frame(serialized_event));
}

}  // namespace dpo
