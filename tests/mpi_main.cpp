// Catch2 main for the tests that run under mpirun: MPI lives for the whole session.
// DPO_TEST_ABORT=1 instead checks that one failing rank ends the job: rank 1 (or the only rank)
// calls abort_job while the others wait in a barrier that never completes.
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_NO_POSIX_SIGNALS  // crash_backtrace's handlers instead
#include "catch2_api.h"

#include <cstdlib>

#include "crash_backtrace.h"
#include "dpo/dist/dist.h"
#include "dpo/kernels/float_matmul.h"

dpo::MpiRuntime* g_mpi_runtime = nullptr;

int main(int argc, char** argv) {
  crash_backtrace::install();
  dpo::route_float_matmuls();  // as in the dpo binary
  dpo::MpiRuntime runtime;
  g_mpi_runtime = &runtime;
  if (const char* mode = std::getenv("DPO_TEST_ABORT"); mode && std::string(mode) == "1") {
    auto communicator = dpo::make_host_communicator(runtime);
    if (communicator->rank() == std::min(1, communicator->world_size() - 1)) dpo::abort_job("test abort from one rank");
    communicator->barrier();
    return 0;  // not reached when the abort works
  }
  return Catch::Session().run(argc, argv);
}
