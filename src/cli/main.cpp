#include "dpo/cli/cli.h"
#include "dpo/runtime/runtime.h"

int main(int argc, char** argv) {
  dpo::ensure_thread_environment(argc, argv);
  return dpo::run_cli(argc, argv);
}
