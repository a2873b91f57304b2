// Content fingerprints (64-bit hashes chained with splitmix64's mixer over 8-byte words, so
// hashing runs at memory speed: a bytewise FNV would be ~8x slower on multi-GB weights) and the
// rank-agreement checks built on them.
#include "dpo/reference/fingerprint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "dpo/data/splitmix64.h"
#include "dpo/dist/dist.h"
#include "dpo/error.h"

namespace dpo {

namespace fs = std::filesystem;

void Hasher::update(const char* data, size_t n) {
  length_ += n;
  while (n > 0) {
    if (pending_size_ == 0 && n >= 8) {
      const size_t words = n / 8;
      for (size_t w = 0; w < words; ++w) {
        uint64_t word;
        std::memcpy(&word, data + 8 * w, 8);
        state_ = mix64(state_ ^ word);
      }
      data += 8 * words;
      n -= 8 * words;
      continue;
    }
    pending_[pending_size_++] = *data++;
    --n;
    if (pending_size_ == 8) {
      uint64_t word;
      std::memcpy(&word, pending_, 8);
      state_ = mix64(state_ ^ word);
      pending_size_ = 0;
    }
  }
}

void Hasher::update_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read (to fingerprint it)", path);
  std::vector<char> chunk(size_t{1} << 20);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    update(chunk.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) fail("{}: read failed (to fingerprint it)", path);
}

std::string Hasher::hex() const {
  uint64_t word = 0;
  std::memcpy(&word, pending_, pending_size_);
  return fmt::format("{:016x}", mix64(mix64(state_ ^ word) ^ length_));
}

std::string file_fingerprint(const std::string& path) {
  Hasher h;
  h.update_file(path);
  return h.hex();
}

std::string model_fingerprint(const std::string& model_dir) {
  if (!fs::is_directory(model_dir)) fail("{}: not a model directory (to fingerprint it)", model_dir);
  std::vector<std::string> names = {"config.json"};
  std::vector<std::string> weights;
  for (const auto& entry : fs::directory_iterator(model_dir))
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") weights.push_back(entry.path().filename().string());
  std::sort(weights.begin(), weights.end());
  if (weights.empty()) fail("{}: no *.safetensors weights (to fingerprint them)", model_dir);
  names.insert(names.end(), weights.begin(), weights.end());
  Hasher h;
  for (const auto& name : names) {
    h.update(name);
    h.update_file((fs::path(model_dir) / name).string());
  }
  return h.hex();
}

std::string tensors_fingerprint(const std::vector<at::Tensor>& tensors) {
  // Each tensor's dtype and shape, then its bytes in 16 MiB pieces, hashed in parallel (multi-GB
  // weights, one embedding often the largest part), then the hash of those digests in order.
  constexpr size_t kPiece = size_t{16} << 20;
  std::vector<at::Tensor> hosted;
  std::vector<std::pair<size_t, size_t>> pieces;  // (tensor, byte offset)
  for (const auto& tensor : tensors) {
    hosted.push_back(tensor.detach().to(at::kCPU).contiguous());
    const size_t bytes = static_cast<size_t>(hosted.back().numel()) * hosted.back().element_size();
    for (size_t offset = 0; offset == 0 || offset < bytes; offset += kPiece) pieces.emplace_back(hosted.size() - 1, offset);
  }
  std::vector<std::string> digests(pieces.size());
  at::parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto [t, offset] = pieces[static_cast<size_t>(i)];
      const at::Tensor& tensor = hosted[t];
      const size_t bytes = static_cast<size_t>(tensor.numel()) * tensor.element_size();
      Hasher h;
      if (offset == 0) {
        h.update(std::string(c10::toString(tensor.scalar_type())));
        for (const int64_t size : tensor.sizes()) h.update(std::to_string(size));
      }
      h.update(static_cast<const char*>(tensor.data_ptr()) + offset, std::min(kPiece, bytes - offset));
      digests[static_cast<size_t>(i)] = h.hex();
    }
  });
  Hasher all;
  for (const auto& digest : digests) all.update(digest);
  return all.hex();
}

std::string dataset_fingerprint(const PreferenceDataset& dataset) {
  Hasher h;
  for (size_t i = 0; i < dataset.size(); ++i)
    for (const TokenIds* ids : {&dataset[i].prompt, &dataset[i].chosen, &dataset[i].rejected}) {
      const uint64_t length = ids->size();
      h.update(reinterpret_cast<const char*>(&length), sizeof length);
      h.update(reinterpret_cast<const char*>(ids->data()), ids->size() * sizeof(int32_t));
    }
  return h.hex();
}

void require_same_weights_on_all_ranks(Communicator& comm, const std::string& key, const std::string& source,
                                       const std::vector<at::Tensor>& weights) {
  if (comm.world_size() == 1) return;
  require_same_on_all_ranks(comm, key, fmt::format("{}, weights fingerprint {}", source, tensors_fingerprint(weights)),
                            [&](const std::string& mine, const std::string& root) {
                              return fmt::format("rank {}: {}: {} but rank 0 has {} (a stale or other copy of the "
                                                 "model on one node?)", comm.rank(), key, mine, root);
                            });
}

void require_same_dataset_on_all_ranks(Communicator& comm, const std::string& key, const PreferenceDataset& dataset) {
  if (comm.world_size() == 1) return;
  require_same_on_all_ranks(comm, fmt::format("{} {}", key, dataset.path()),
                            fmt::format("{} pairs, fingerprint {}", dataset.size(), dataset_fingerprint(dataset)));
}

}  // namespace dpo
