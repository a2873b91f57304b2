// Peak memory of a phase (dpo bench's timed steps): after reset_peak_memory, the CPU peak counts
// only what is resident from then on. The memory is mapped and touched here directly (mmap), so
// the check does not depend on how malloc or libtorch's allocator hand out large blocks.
#include <sys/mman.h>

#include <cstddef>
#include <cstring>

#include "catch2_api.h"

#include "dpo/train/throughput.h"

namespace {

// `mib` MiB of anonymous memory, every page written so that it is resident, then unmapped.
struct ResidentBlock {
  explicit ResidentBlock(size_t mib) : bytes(mib << 20) {
    data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(data != MAP_FAILED);
    std::memset(data, 1, bytes);
  }
  ~ResidentBlock() { munmap(data, bytes); }
  ResidentBlock(const ResidentBlock&) = delete;
  ResidentBlock& operator=(const ResidentBlock&) = delete;
  size_t bytes;
  void* data = nullptr;
};

}  // namespace

TEST_CASE("after a reset the CPU peak memory is that of what follows, not of what came before", "[throughput]") {
  { ResidentBlock earlier(256); }
  const double with_earlier = dpo::peak_memory_mib("cpu");
  REQUIRE(with_earlier > 256);
  if (!dpo::reset_peak_memory("cpu")) {
    WARN("this system cannot reset the peak resident set (/proc/self/clear_refs): nothing to check");
    return;
  }
  const double after_reset = dpo::peak_memory_mib("cpu");
  CHECK(after_reset < with_earlier - 200);
  {
    ResidentBlock later(128);
    CHECK(dpo::peak_memory_mib("cpu") > after_reset + 120);
  }
  CHECK(dpo::peak_memory_mib("cpu") > after_reset + 120);  // a peak stays after the memory is freed
}
