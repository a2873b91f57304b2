// `dpo inspect PATH`: a human-readable summary of a model directory, a JSONL or HDF5 dataset.
#pragma once
#include <string>

namespace dpo {

std::string inspect_path(const std::string& path);

}  // namespace dpo
