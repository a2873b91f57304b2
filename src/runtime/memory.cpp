#include "dpo/runtime/memory.h"

#include <malloc.h>

#include "dpo/error.h"

namespace dpo {

void keep_freed_memory_in_heap() {
  // M_MMAP_MAX 0: no allocation is served by mmap, so none is unmapped on free. The trim
  // threshold (bytes free at the top of the heap before glibc returns them) as large as it goes.
  if (mallopt(M_MMAP_MAX, 0) != 1 || mallopt(M_TRIM_THRESHOLD, 0x7fffffff) != 1 || mallopt(M_TOP_PAD, 64 << 20) != 1)
    fail("mallopt refused the heap settings that keep freed tensors in the process");
}

}  // namespace dpo
