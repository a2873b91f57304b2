#include "dpo/config/text_distance.h"

#include <algorithm>
#include <limits>

namespace dpo {

size_t edit_distance(const std::string& a, const std::string& b) {
  // Levenshtein distance with one rolling row: insertions, deletions and substitutions cost 1.
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      const size_t substitution = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({above + 1, row[j - 1] + 1, substitution});
      diagonal = above;
    }
  }
  return row[b.size()];
}

namespace {

// "train.lr" -> "lr"; a word without a dot is its own last component.
std::string last_component(const std::string& key) {
  const size_t dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

// Whether `candidate` is a plausible intended spelling of `word`: close in edit distance, or the
// same option name under another section ('model.lr' or 'lr' for 'train.lr'), or one name
// extending the other ('lr_rate' for 'lr', 'warmup' for 'warmup_steps').
bool plausible(const std::string& word, const std::string& candidate, size_t distance) {
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  if (distance <= limit) return true;
  const std::string word_name = last_component(word);
  const std::string candidate_name = last_component(candidate);
  if (word_name == candidate_name) return true;
  const std::string& shorter = word_name.size() < candidate_name.size() ? word_name : candidate_name;
  const std::string& longer = word_name.size() < candidate_name.size() ? candidate_name : word_name;
  if (shorter.size() >= 2 && starts_with(longer, shorter)) return true;
  return word_name.size() >= 3 &&
         edit_distance(word_name, candidate_name) <= std::max<size_t>(1, word_name.size() / 3);
}

}  // namespace

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  // Among the plausible candidates, the one with the smallest full edit distance (first wins ties);
  // the last-component rules above only decide plausibility, so a near-exact spelling still wins.
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const std::string& candidate : candidates) {
    const size_t distance = edit_distance(word, candidate);
    if (distance < best_distance && plausible(word, candidate, distance)) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace dpo
