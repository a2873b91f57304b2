// Keeping freed memory in the process. glibc serves blocks of 32 MiB and more (and, by default,
// of 128 KiB and more) with mmap and hands them back to the kernel on free, and trims the heap's
// top: a training step that frees and reallocates the same vocabulary-sized tensors then pays
// fresh page faults for them every step (3-5x slower steps and 40-70% system time seen here, more
// with mixed precision's casts). The product sets this itself rather than asking users for
// MALLOC_* variables.
#pragma once

namespace dpo {

// Every allocation from the heap (no mmap), and the heap never trimmed: freed blocks are reused.
// The process's resident size then stays at its high-water mark. Call first thing in main.
void keep_freed_memory_in_heap();

}  // namespace dpo
