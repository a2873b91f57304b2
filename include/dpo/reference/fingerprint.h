// Fingerprints: 64-bit content hashes of files, model directories, tensors and datasets, which tie
// a reference log-prob file to what it was computed from, and the collectives that stop a job
// whose ranks hold different copies of a model or dataset.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "dpo/data/preference_data.h"

namespace dpo {

class Communicator;

// The 64-bit content hash behind every fingerprint: 8-byte words chained through splitmix64's
// mixer, the length folded in at the end, rendered as 16 hex digits by hex().
class Hasher {
 public:
  void update(const char* data, size_t n);
  void update(const std::string& text) { update(text.data(), text.size() + 1); }  // with its NUL
  void update_file(const std::string& path);  // the file's bytes, streamed in 1 MiB chunks
  std::string hex() const;

 private:
  uint64_t state_ = 0x6a09e667f3bcc908ULL, length_ = 0;
  char pending_[8] = {};
  size_t pending_size_ = 0;
};

// 64-bit content hashes rendered as 16 hex digits. A file's hash covers its bytes (streamed in
// 1 MiB chunks); a model directory's covers config.json and every *.safetensors file (sorted by
// name, names included), so it changes with the weights and needs no model load.
std::string file_fingerprint(const std::string& path);
std::string model_fingerprint(const std::string& model_dir);
// The same hash over what a process holds in memory: tensors (dtype, shape and bytes of each, in
// order; hashed in parallel pieces) and a loaded dataset's token ids after truncation.
std::string tensors_fingerprint(const std::vector<at::Tensor>& tensors);
std::string dataset_fingerprint(const PreferenceDataset& dataset);

// Collectives that stop a job whose ranks would silently train on different inputs (a stale
// node-local copy of a model, another data file): every rank's copy must equal rank 0's, else every
// rank throws, naming the first rank that differs, the key, the path and both fingerprints, e.g.
// "rank 1: data.train /p/train.jsonl: 1000 pairs, fingerprint ab12.. but rank 0 has 1200 pairs,
// fingerprint cd34..". Free in a world of one. `weights` are a model's parameters as loaded from
// `source` (a model directory or checkpoint) for config key `key` (model.policy, model.reference).
void require_same_weights_on_all_ranks(Communicator& comm, const std::string& key, const std::string& source,
                                       const std::vector<at::Tensor>& weights);
void require_same_dataset_on_all_ranks(Communicator& comm, const std::string& key, const PreferenceDataset& dataset);

}  // namespace dpo
