#include "dpo/cli.h"
#include "dpo/runtime.h"

int main(int argc, char** argv) {
  dpo::ensure_thread_environment(argc, argv);
  return dpo::run_cli(argc, argv);
}
