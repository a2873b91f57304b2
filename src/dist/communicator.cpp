// The backend-independent parts of dist.h: the single-process communicator, the blocking
// fallback for start_all_reduce_sum, and the checks that every rank holds the same
// values (config, input fingerprints).
#include <algorithm>
#include <sstream>

#include <fmt/format.h>

#include "dpo/dist/dist.h"
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

void require_same_on_all_ranks(Communicator& communicator, const std::string& what, const std::string& value,
                               const std::function<std::string(const std::string&, const std::string&)>& describe) {
  std::string root_value = value;
  communicator.broadcast_string(root_value, 0);
  // One reduction tells every rank whether any differs and which is the lowest: the maximum of
  // -rank over the differing ranks (-world_size stands for "none").
  const int world = communicator.world_size();
  const bool differs = root_value != value;
  const int lowest = -static_cast<int>(communicator.all_reduce_max(differs ? -communicator.rank() : -world));
  if (lowest == world) return;
  std::string message;
  if (communicator.rank() == lowest)
    message = describe ? describe(value, root_value)
                       : fmt::format("rank {}: {}: {} but rank 0 has {}", lowest, what, value, root_value);
  communicator.broadcast_string(message, lowest);
  throw Error(message);
}

void require_same_config(Communicator& communicator, const std::string& resolved_config_yaml) {
  // The config is a few kB: sending rank 0's whole text costs no more than a hash round and lets
  // the differing rank name the line.
  const int rank = communicator.rank();
  require_same_on_all_ranks(communicator, "config", resolved_config_yaml, [rank](const std::string& mine_text,
                                                                                 const std::string& root_text) {
    const auto mine = split_lines(mine_text);
    const auto theirs = split_lines(root_text);
    const std::string end = "<end of config>";
    for (size_t i = 0; i < std::max(mine.size(), theirs.size()); ++i) {
      const std::string& a = i < mine.size() ? mine[i] : end;
      const std::string& b = i < theirs.size() ? theirs[i] : end;
      if (a != b) return fmt::format("rank {}'s config differs from rank 0's at '{}' (rank 0: '{}')", rank, a, b);
    }
    return fmt::format("rank {}'s config differs from rank 0's in line endings or trailing text", rank);
  });
}

}  // namespace dpo
