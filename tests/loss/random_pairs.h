// Random per-pair log-probs for the loss tests: reference log-probs in [-60, -5], policy ones within
// 8 of them, token counts in [1, 40]; deterministic for a seed.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

struct Pair {
  double pc, pr, rc, rr;  // policy / reference log-probs of chosen and rejected
  int64_t nc, nr;         // token counts
};

inline std::vector<Pair> random_pairs(uint32_t seed, int count) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> logp(-60.0, -5.0);
  std::uniform_real_distribution<double> delta(-8.0, 8.0);
  std::uniform_int_distribution<int64_t> tokens(1, 40);
  std::vector<Pair> pairs;
  for (int i = 0; i < count; ++i) {
    Pair p;
    p.rc = logp(rng);
    p.rr = logp(rng);
    p.pc = p.rc + delta(rng);
    p.pr = p.rr + delta(rng);
    p.nc = tokens(rng);
    p.nr = tokens(rng);
    pairs.push_back(p);
  }
  return pairs;
}
