// The backend-independent parts of dist.h: the single-process communicator, the blocking
// fallback for start_all_reduce_sum, and the same-config check.
#include <sstream>

#include "dpo/dist.h"
#include "dpo/error.h"

namespace dpo {
namespace {

class CompletedReduction final : public PendingReduction {
 public:
  bool test() override { return true; }
  void wait() override {}
};

class SingleProcessCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string name() const override { return "single"; }
  void all_reduce_sum(at::Tensor& tensor) override {
    if (!tensor.is_contiguous()) fail("all_reduce_sum: tensor is not contiguous");
  }
  void all_reduce_sum(std::vector<double>&) override {}
  double all_reduce_max(double value) override { return value; }
  void broadcast_string(std::string&, int root) override {
    if (root != 0) fail("broadcast_string: root {} is not a rank of a world of 1", root);
  }
  void barrier() override {}
};

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

std::unique_ptr<PendingReduction> Communicator::start_all_reduce_sum(at::Tensor& tensor) {
  all_reduce_sum(tensor);
  return std::make_unique<CompletedReduction>();
}

std::unique_ptr<Communicator> make_single_process_communicator() {
  return std::make_unique<SingleProcessCommunicator>();
}

void require_same_config(Communicator& communicator, const std::string& resolved_config_yaml) {
  // The config is a few kB: sending rank 0's whole text costs no more than a hash round and lets
  // the differing rank name the line.
  std::string root_text = resolved_config_yaml;
  communicator.broadcast_string(root_text, 0);
  if (root_text == resolved_config_yaml) return;
  const auto mine = split_lines(resolved_config_yaml);
  const auto theirs = split_lines(root_text);
  const std::string end = "<end of config>";
  for (size_t i = 0; i < std::max(mine.size(), theirs.size()); ++i) {
    const std::string& a = i < mine.size() ? mine[i] : end;
    const std::string& b = i < theirs.size() ? theirs[i] : end;
    if (a != b)
      fail("rank {}'s config differs from rank 0's at '{}' (rank 0: '{}')", communicator.rank(), a, b);
  }
  fail("rank {}'s config differs from rank 0's in line endings or trailing text", communicator.rank());
}

}  // namespace dpo
