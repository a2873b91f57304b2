// Edit distance and "did you mean" suggestions for unknown keys and flags.
#pragma once
#include <string>
#include <vector>

namespace dpo {

size_t edit_distance(const std::string& a, const std::string& b);
// The candidate closest to `word`, or "" when none is plausibly meant.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace dpo
