// Distribution: the rank layout of the job, the Communicator that sums tensors and host values
// across ranks (MPI on CPUs, NCCL on GPUs, a no-op single-process one for unit tests), MPI's
// lifetime, aborting the whole job from one rank, the checks that every rank runs the same
// configuration on the same inputs, and the refusal of an srun that started no MPI job. It does not decide what is reduced: the trainer sums gradients (the loss is
// already scaled by 1/global_batch_pairs on every rank, so SUMS are the right reduction) and
// metric sums; gradient bucketing lives in grad_buckets.h.
//
// Every collective here must be called by every rank, in the same order. A rank that throws
// between collectives leaves the others waiting in the next one: catch at the top, and call
// abort_job(), which ends the whole job.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace dpo {

struct ProcessInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // rank among the processes on this node (selects the GPU)
  int local_world_size = 1;  // processes on this node
  // The cores this rank may use: every CPU of its affinity mask counts 1 / (ranks on this node
  // whose masks hold it), so ranks bound to their own cores (mpirun --bind-to core, srun
  // --cpu-bind) keep all of theirs and unbound ranks split the node evenly.
  double cores = 1;
};

// A reduction started by Communicator::start_all_reduce_sum; the tensor holds the sum once wait()
// returns (for NCCL: for all work queued afterwards on libtorch's current CUDA stream, which a
// host read of the tensor waits for). test() drives progress (MPI progresses non-blocking collectives only inside MPI calls)
// and says whether it has completed. Destroying an unfinished reduction waits for it.
class PendingReduction {
 public:
  virtual ~PendingReduction() = default;
  virtual bool test() = 0;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string name() const = 0;  // "single", "mpi", "nccl"

  // In place, on a contiguous tensor of float32, float64, bfloat16 or int64 (int32 too for MPI):
  // CPU tensors for MPI, CUDA tensors for NCCL. bfloat16 is summed in float32 by MPI.
  virtual void all_reduce_sum(at::Tensor& tensor) = 0;
  // Starts the same reduction without waiting. The default runs it to completion at once; MPI
  // overrides it with MPI_Iallreduce. Until wait() the tensor must be neither read nor written.
  virtual std::unique_ptr<PendingReduction> start_all_reduce_sum(at::Tensor& tensor);
  // Whether start_all_reduce_sum really overlaps with computation (gradient buckets launch
  // during backward only then).
  virtual bool supports_overlap() const { return false; }
  // Whether start_all_reduce_sum may be called from a thread other than the one that made the
  // communicator: libtorch runs a CUDA backward, and so the gradient hooks, on its own device
  // thread. MPI is initialised MPI_THREAD_FUNNELED, so it may not.
  virtual bool starts_from_any_thread() const { return false; }

  // Small host values: metric sums and counts, in place.
  virtual void all_reduce_sum(std::vector<double>& values) = 0;
  virtual double all_reduce_max(double value) = 0;
  // Whether `flag` is true on any rank (stop requests, non-finite gradients).
  bool any(bool flag) { return all_reduce_max(flag ? 1.0 : 0.0) > 0.0; }
  // `text` on every rank becomes root's.
  virtual void broadcast_string(std::string& text, int root) = 0;
  virtual void barrier() = 0;
};

// World of one: every collective is a no-op (keeps unit tests free of mpirun).
std::unique_ptr<Communicator> make_single_process_communicator();

// Owns MPI for the life of the process. MPI is initialised (MPI_THREAD_FUNNELED: only the thread
// that constructed this calls MPI) only when the process was launched by mpirun/mpiexec/srun,
// detected from the environment (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK, PMI_SIZE); otherwise
// the process runs alone and MPI is never touched, so `dpo train` works without a launcher.
// MPI_COMM_WORLD's error handler is MPI_ERRORS_RETURN: every MPI call is checked and a failure
// throws dpo::Error naming the call, file:line and MPI's message. Finalises on destruction
// (unless MPI was initialised by someone else, or aborted).
class MpiRuntime {
 public:
  MpiRuntime();
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  bool active() const { return active_; }  // MPI is initialised and usable
  const ProcessInfo& info() const { return info_; }
  // Whether the environment says a launcher started us.
  static bool launched_by_mpi();

 private:
  bool active_ = false;
  bool owns_mpi_ = false;
  ProcessInfo info_;
};

// MPI collectives are limited to INT_MAX elements per call; larger tensors go in chunks.
constexpr int64_t kMpiChunkElements = (int64_t{1} << 30);

// Collectives over (a duplicate of) MPI_COMM_WORLD; MPI must be active. `chunk_elements` is the
// largest element count of one MPI call (smaller values exercise chunking in tests).
std::unique_ptr<Communicator> make_mpi_communicator(int64_t chunk_elements = kMpiChunkElements);

// The MPI communicator when MpiRuntime is active, else the single-process one.
std::unique_ptr<Communicator> make_host_communicator(const MpiRuntime& runtime);

#ifdef DPO_WITH_NCCL
// Built only against a libtorch with CUDA (DPO_TORCH_CUDA) and NCCL. Tensor collectives on CUDA
// tensors through NCCL on `cuda_device`, ordered with libtorch's current stream by events (the
// host does not wait), so they overlap with backward; host-value collectives
// (vectors, max, strings, barrier) go to `bootstrap`, which must outlive the result. Rank 0's
// ncclUniqueId is broadcast over `bootstrap`. Logs the NCCL version (rank 0) when it starts.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int cuda_device);
#endif

// Prints "dpo: error: [rank R] message" to stderr and ends the whole job: MPI_Abort when MPI is
// initialised (the other ranks are killed, nobody hangs), else exit(1) ("dpo: error: message").
[[noreturn]] void abort_job(const std::string& message);

// Every rank's `value` must equal rank 0's (a collective: every rank calls it with the same
// `what`). Otherwise EVERY rank throws the same dpo::Error, written by the lowest rank that
// differs: "rank 1: data.train /p: 1000 pairs, fingerprint ab12.. but rank 0 has 1200 pairs,
// fingerprint cd34.." (`what`, then both values), or `describe(mine, rank 0's)` when given. Because every rank throws, none is left waiting in a later collective.
void require_same_on_all_ranks(
    Communicator& communicator, const std::string& what, const std::string& value,
    const std::function<std::string(const std::string& mine, const std::string& root)>& describe = nullptr);

// Every rank's resolved configuration (the YAML dump) must equal rank 0's: require_same_on_all_ranks
// naming the first differing line, e.g. "rank 1's config differs from rank 0's at 'train.lr: 0.001'
// (rank 0: 'train.lr: 0.0001')".
void require_same_config(Communicator& communicator, const std::string& resolved_config_yaml);

// Slurm's srun without MPI support (MpiDefault=none, or a missing --mpi=pmix) starts every task of
// a step as a job of its own: N single-rank runs writing the same run.output_dir. Slurm says the
// step has N tasks (SLURM_STEP_NUM_TASKS, set only inside a step, not in the batch script), MPI
// says the world has `world_size`. Returns a one-line reason (how to launch) when a step of N > 1
// tasks meets a world of 1 and no mpirun started this process (mpirun's daemons form a step of
// one task per node; its ranks are not that step's tasks); "" otherwise.
std::string srun_without_mpi_reason(int world_size);

}  // namespace dpo
