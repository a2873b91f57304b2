// `dpo inspect PATH`: a human-readable summary of a model directory, a JSONL or HDF5 dataset, or
// a reference log-prob file (provenance, sizes, completeness, statistics).
#pragma once
#include <string>

namespace dpo {

std::string inspect_path(const std::string& path);

}  // namespace dpo
