// What the tests run under mpirun share: the job's communicator and a scratch directory that rank 0
// makes and every rank sees. MPI lives for the whole test session (tests/mpi_main.cpp); run alone,
// the tests get the single-process communicator.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "dpo/dist/dist.h"

extern dpo::MpiRuntime* g_mpi_runtime;

inline std::unique_ptr<dpo::Communicator> world(int64_t chunk = dpo::kMpiChunkElements) {
  return g_mpi_runtime->active() ? dpo::make_mpi_communicator(chunk) : dpo::make_single_process_communicator();
}

// A fresh empty directory `<tmp>/dpo-mpi-<name>-<pid of rank 0>` made by rank 0; every rank gets
// its path.
inline std::filesystem::path shared_directory(dpo::Communicator& comm, const std::string& name) {
  std::string path;
  if (comm.rank() == 0) {
    path = (std::filesystem::temp_directory_path() / fmt::format("dpo-mpi-{}-{}", name, static_cast<long>(getpid())))
               .string();
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  comm.broadcast_string(path, 0);
  return path;
}
