// The lock of an output directory in use: `<dir>/dpo.lock`, created exclusively (O_EXCL) by the
// run that writes the directory (train, sft) and removed when that run ends. It holds the host,
// pid, command and start time of its owner, so that a second run on the same directory is refused
// naming them instead of interleaving its checkpoints and metrics.jsonl lines with the first's. A
// lock whose owner is gone (same host, no such process: a kill -9, a node reboot; or an earlier run
// of the same Slurm job, requeued onto another node) is taken over with a warning; one from another
// host cannot be checked and is refused, naming the file to remove by hand.
#pragma once
#include <string>

namespace dpo {

class OutputLock {
 public:
  // Takes the lock of `directory` (created when missing) for `command`; dpo::Error naming the
  // directory and the owner when a live run holds it.
  OutputLock(const std::string& directory, const std::string& command);
  ~OutputLock();  // removes the lock file
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace dpo
