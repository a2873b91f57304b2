#include "dpo/io/output_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/io/timestamp.h"

namespace dpo {
namespace {

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "unknown-host";
  return name;
}

// The Slurm job this process belongs to ("" outside Slurm): a requeued job is the same job.
std::string slurm_job() {
  const char* id = std::getenv("SLURM_JOB_ID");
  return id ? id : "";
}

// The owner recorded in a lock file: "host=H pid=P command=C started=T [slurm_job=J]" on one line.
struct Owner {
  std::string host, command, started, slurm_job;
  long pid = -1;
  std::string text;  // the line as read, for messages
};

Owner read_owner(const std::string& path) {
  Owner owner;
  std::ifstream in(path);
  std::getline(in, owner.text);
  std::istringstream fields(owner.text);
  for (std::string field; fields >> field;) {
    const size_t eq = field.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = field.substr(0, eq), value = field.substr(eq + 1);
    if (key == "host") owner.host = value;
    if (key == "command") owner.command = value;
    if (key == "started") owner.started = value;
    if (key == "slurm_job") owner.slurm_job = value;
    if (key == "pid") owner.pid = std::strtol(value.c_str(), nullptr, 10);
  }
  return owner;
}

// Whether process `pid` exists on this host (EPERM: it exists, owned by someone else).
bool process_exists(long pid) { return pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

}  // namespace

OutputLock::OutputLock(const std::string& directory, const std::string& command)
    : path_((std::filesystem::path(directory) / "dpo.lock").string()) {
  make_directories(directory);
  const std::string me = host_name();
  const std::string job = slurm_job();
  const std::string line = fmt::format("host={} pid={} command={} started={}{}\n", me, static_cast<long>(getpid()),
                                       command, utc_timestamp(), job.empty() ? "" : " slurm_job=" + job);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
      ::close(fd);
      if (!written) {
        ::unlink(path_.c_str());
        fail("{}: cannot write the lock file: {}", path_, std::strerror(errno));
      }
      return;
    }
    if (errno != EEXIST) fail("{}: cannot create the lock file: {}", path_, std::strerror(errno));
    const Owner owner = read_owner(path_);
    const bool here = owner.host == me;
    // Gone: no such process on this host, or an earlier run of this very Slurm job (requeued after
    // its node failed or it was killed; the job holds one allocation at a time).
    const bool requeued = !job.empty() && owner.slurm_job == job;
    if ((here && owner.pid > 0 && !process_exists(owner.pid)) || requeued) {
      fmt::print(stderr, "dpo: warning: {}: taking over the lock of dpo {} (pid {} on {}, started {}), which is no "
                 "longer running{}\n", path_, owner.command, owner.pid, owner.host, owner.started,
                 requeued ? fmt::format(" (an earlier run of Slurm job {})", job) : "");
      ::unlink(path_.c_str());
      continue;
    }
    fail("{}: in use by dpo {} (pid {} on {}, started {}); two runs on one output directory would mix their "
         "checkpoints and metrics: wait for it to end, or use another run.output_dir{}",
         directory, owner.command.empty() ? "?" : owner.command, owner.pid, owner.host.empty() ? "?" : owner.host,
         owner.started.empty() ? "?" : owner.started,
         here ? "" : fmt::format(" (it runs on another host, so dpo cannot tell whether it is gone: if it is, remove {})", path_));
  }
  fail("{}: another run took the lock while this one was taking it over", path_);
}

OutputLock::~OutputLock() { ::unlink(path_.c_str()); }

}  // namespace dpo
