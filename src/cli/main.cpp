#include "dpo/cli/cli.h"
#include "dpo/kernels/float_matmul.h"
#include "dpo/runtime/memory.h"
#include "dpo/runtime/preemption.h"
#include "dpo/runtime/runtime.h"

// The executable's .preinit_array runs before the shared libraries' initialisers: a stop signal
// from mpirun or Slurm in that second waits for run_cli's handler (see defer_stop_signals).
__attribute__((section(".preinit_array"), used)) static void (*const kDeferStopSignals)(int, char**, char**) =
    [](int, char**, char**) { dpo::defer_stop_signals(); };

int main(int argc, char** argv) {
  dpo::ensure_thread_environment(argc, argv);
  dpo::keep_freed_memory_in_heap();
  dpo::route_float_matmuls();
  return dpo::run_cli(argc, argv);
}
