// MPI: the runtime's lifetime, the MPI communicator, and aborting the job.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/runtime/runtime.h"

namespace dpo {
namespace {

// Every MPI call goes through this: with MPI_ERRORS_RETURN set, a failure becomes a dpo::Error
// naming the call and where it was made instead of MPI's default abort without context.
void check_mpi(int code, const char* call, const char* file, int line) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) std::snprintf(text, sizeof text, "error code %d", code);
  fail("{}:{}: {} failed: {}", file, line, call, text);
}
#define DPO_MPI_CHECK(call) ::dpo::check_mpi((call), #call, __FILE__, __LINE__)

bool mpi_initialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

MPI_Datatype mpi_type_of(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    default: fail("mpi all_reduce_sum: unsupported dtype {}", c10::toString(type));
  }
}

void require_reducible(const at::Tensor& tensor) {
  if (!tensor.defined()) fail("mpi all_reduce_sum: tensor is undefined");
  if (!tensor.device().is_cpu()) fail("mpi all_reduce_sum: tensor is on {}, MPI reduces CPU tensors", tensor.device().str());
  if (!tensor.is_contiguous()) fail("mpi all_reduce_sum: tensor is not contiguous");
}

// One reduction in flight: a request per chunk; a bfloat16 tensor is summed through a float32
// copy (MPI has no bfloat16, and the float32 sum is the more precise one) and copied back.
class MpiPendingReduction final : public PendingReduction {
 public:
  MpiPendingReduction(at::Tensor target, at::Tensor staging, std::vector<MPI_Request> requests)
      : target_(std::move(target)), staging_(std::move(staging)), requests_(std::move(requests)) {}
  ~MpiPendingReduction() override {
    try {
      wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dpo: error: unfinished reduction: %s\n", e.what());
    }
  }
  bool test() override {
    if (done_) return true;
    int flag = 0;
    DPO_MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, MPI_STATUSES_IGNORE));
    if (flag) finish();
    return done_;
  }
  void wait() override {
    if (done_) return;
    DPO_MPI_CHECK(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
    finish();
  }

 private:
  void finish() {
    done_ = true;
    if (staging_.defined()) target_.copy_(staging_);
  }
  at::Tensor target_, staging_;
  std::vector<MPI_Request> requests_;
  bool done_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(int64_t chunk_elements) : chunk_elements_(chunk_elements) {
    if (!mpi_initialized()) fail("mpi communicator: MPI is not initialised (start the job with mpirun or srun)");
    if (chunk_elements <= 0 || chunk_elements > INT_MAX) fail("mpi communicator: chunk of {} elements is out of range", chunk_elements);
    // A private duplicate keeps our collectives apart from any other MPI traffic (parallel HDF5).
    DPO_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    DPO_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    DPO_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    DPO_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    if (mpi_initialized()) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  void all_reduce_sum(at::Tensor& tensor) override {
    require_reducible(tensor);
    at::Tensor work = tensor.scalar_type() == at::kBFloat16 ? tensor.to(at::kFloat) : tensor;
    const MPI_Datatype type = mpi_type_of(work.scalar_type());
    char* base = static_cast<char*>(work.data_ptr());
    const int64_t element_size = static_cast<int64_t>(work.element_size());
    for (int64_t offset = 0; offset < work.numel(); offset += chunk_elements_) {
      const int count = static_cast<int>(std::min(chunk_elements_, work.numel() - offset));
      DPO_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, base + offset * element_size, count, type, MPI_SUM, comm_));
    }
    if (!work.is_same(tensor)) tensor.copy_(work);
  }

  std::unique_ptr<PendingReduction> start_all_reduce_sum(at::Tensor& tensor) override {
    require_reducible(tensor);
    at::Tensor staging = tensor.scalar_type() == at::kBFloat16 ? tensor.to(at::kFloat) : at::Tensor();
    at::Tensor work = staging.defined() ? staging : tensor;
    const MPI_Datatype type = mpi_type_of(work.scalar_type());
    char* base = static_cast<char*>(work.data_ptr());
    const int64_t element_size = static_cast<int64_t>(work.element_size());
    std::vector<MPI_Request> requests;
    for (int64_t offset = 0; offset < work.numel(); offset += chunk_elements_) {
      const int count = static_cast<int>(std::min(chunk_elements_, work.numel() - offset));
      requests.emplace_back();
      DPO_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, base + offset * element_size, count, type, MPI_SUM, comm_, &requests.back()));
    }
    return std::make_unique<MpiPendingReduction>(tensor, staging, std::move(requests));
  }
  bool supports_overlap() const override { return true; }

  void all_reduce_sum(std::vector<double>& values) override {
    if (values.empty()) return;
    if (values.size() > static_cast<size_t>(INT_MAX)) fail("mpi all_reduce_sum: {} host values exceed one call", values.size());
    DPO_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, MPI_SUM, comm_));
  }
  double all_reduce_max(double value) override {
    DPO_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_DOUBLE, MPI_MAX, comm_));
    return value;
  }
  void broadcast_string(std::string& text, int root) override {
    if (root < 0 || root >= size_) fail("broadcast_string: root {} is not a rank of a world of {}", root, size_);
    uint64_t length = text.size();
    DPO_MPI_CHECK(MPI_Bcast(&length, 1, MPI_UINT64_T, root, comm_));
    if (length > static_cast<uint64_t>(INT_MAX)) fail("broadcast_string: {} bytes exceed one call", length);
    text.resize(length);
    DPO_MPI_CHECK(MPI_Bcast(text.data(), static_cast<int>(length), MPI_CHAR, root, comm_));
  }
  void barrier() override { DPO_MPI_CHECK(MPI_Barrier(comm_)); }

 private:
  int64_t chunk_elements_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool MpiRuntime::launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(name)) return true;
  return false;
}

std::string srun_without_mpi_reason(int world_size) {
  if (world_size != 1 || std::getenv("OMPI_COMM_WORLD_SIZE")) return "";
  const char* step_tasks = std::getenv("SLURM_STEP_NUM_TASKS");
  if (!step_tasks && std::getenv("SLURM_STEP_ID")) step_tasks = std::getenv("SLURM_NTASKS");  // older Slurm
  if (!step_tasks) return "";
  char* end = nullptr;
  const long tasks = std::strtol(step_tasks, &end, 10);
  if (end == step_tasks || tasks <= 1) return "";
  return fmt::format(
      "srun started this step's {} tasks without MPI: each would run the whole job alone, all writing the same "
      "run.output_dir; launch with `srun --mpi=pmix` (or set MpiDefault=pmix; `srun --mpi=list` shows what this "
      "Slurm supports), or with mpirun",
      tasks);
}

MpiRuntime::MpiRuntime() {
  int initialized = 0;
  DPO_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    if (!launched_by_mpi()) {  // a plain process: run alone, never touch MPI
      const std::vector<int> cpus = affinity_cpus();
      info_.cores = std::count(cpus.begin(), cpus.end(), 1);
      return;
    }
    int provided = 0;
    DPO_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    owns_mpi_ = true;
    if (provided < MPI_THREAD_FUNNELED) fail("MPI_Init_thread: MPI provides thread level {}, dpo needs MPI_THREAD_FUNNELED", provided);
  }
  active_ = true;
  DPO_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  DPO_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info_.rank));
  DPO_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info_.world_size));
  MPI_Comm node = MPI_COMM_NULL;
  DPO_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info_.rank, MPI_INFO_NULL, &node));
  DPO_MPI_CHECK(MPI_Comm_rank(node, &info_.local_rank));
  DPO_MPI_CHECK(MPI_Comm_size(node, &info_.local_world_size));
  const std::vector<int> mine = affinity_cpus();
  std::vector<int> sharers(mine.size(), 0);
  DPO_MPI_CHECK(MPI_Allreduce(mine.data(), sharers.data(), static_cast<int>(mine.size()), MPI_INT, MPI_SUM, node));
  info_.cores = core_share(mine, sharers);
  DPO_MPI_CHECK(MPI_Comm_free(&node));
}

MpiRuntime::~MpiRuntime() {
  if (owns_mpi_ && mpi_initialized()) MPI_Finalize();
}

std::unique_ptr<Communicator> make_mpi_communicator(int64_t chunk_elements) {
  return std::make_unique<MpiCommunicator>(chunk_elements);
}

std::unique_ptr<Communicator> make_host_communicator(const MpiRuntime& runtime) {
  return runtime.active() ? make_mpi_communicator() : make_single_process_communicator();
}

void abort_job(const std::string& message) {
  if (mpi_initialized()) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "dpo: error: [rank %d] %s\n", rank, message.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 1);
  } else {
    std::fprintf(stderr, "dpo: error: %s\n", message.c_str());
    std::fflush(stderr);
  }
  std::exit(1);
}

}  // namespace dpo
