// Reading data files that may be gzip-compressed (`train.jsonl.gz`, as datasets are often shipped):
// one stream type for both, so every JSONL reader takes either without knowing which it got.
#pragma once
#include <istream>
#include <memory>
#include <string>

namespace dpo {

// Opens `path` for reading: a gzip file (by its magic bytes, whatever its name) is decompressed as it
// is read, any other file is read as it is. The stream can be rewound to its start (seekg(0)) and
// reports a corrupt or truncated gzip file as a read error (in.bad()). A file that cannot be opened
// is dpo::Error naming it.
std::unique_ptr<std::istream> open_possibly_compressed(const std::string& path);
// What a reader says when such a stream went bad before its end.
constexpr const char* kReadError = "cannot be read to its end (an I/O error, or corrupt or truncated gzip data)";

}  // namespace dpo
