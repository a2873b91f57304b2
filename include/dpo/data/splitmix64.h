// splitmix64's finaliser (Steele, Lea and Flood 2014): a bijection on 64-bit words that mixes
// every input bit into every output bit. It drives the batch order (data/batch_plan.cpp), spelled
// out rather than std::shuffle because the standard leaves shuffles and distributions
// implementation-defined and the order must not change with the compiler a run resumes on, and
// the content fingerprints (reference/fingerprint.cpp).
#pragma once
#include <cstdint>

namespace dpo {

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace dpo
