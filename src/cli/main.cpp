#include "dpo/cli/cli.h"
#include "dpo/kernels/float_matmul.h"
#include "dpo/runtime/memory.h"
#include "dpo/runtime/runtime.h"

int main(int argc, char** argv) {
  dpo::ensure_thread_environment(argc, argv);
  dpo::keep_freed_memory_in_heap();
  dpo::route_float_matmuls();
  return dpo::run_cli(argc, argv);
}
