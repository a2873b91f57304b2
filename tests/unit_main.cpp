// Catch2 main for the unit tests (our own, so that it reads the same on Catch2 2 and 3).
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_NO_POSIX_SIGNALS  // crash_backtrace's handlers instead
#include "catch2_api.h"

#include "crash_backtrace.h"
#include "dpo/kernels/float_matmul.h"

// The products run as in the dpo binary (float32 on oneDNN where libtorch links it).
int main(int argc, char** argv) {
  crash_backtrace::install();
  dpo::route_float_matmuls();
  return Catch::Session().run(argc, argv);
}
