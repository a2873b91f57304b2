// NCCL: gradient all-reduce of CUDA tensors; host values go to the MPI bootstrap communicator.
// Compiled only with DPO_WITH_NCCL, which CMake sets only for a libtorch built with CUDA
// (DPO_TORCH_CUDA), so it can use libtorch's streams.
//
// Ordering without stalls (as PyTorch's ProcessGroupNCCL does it): each all-reduce runs on this
// communicator's side stream, which first waits for an event recorded on libtorch's current
// stream of the calling thread (so the gradient that backward queued there is complete), and
// records an event when done; wait() makes the current stream wait for that event. The host never
// blocks: no device-wide synchronize, so reductions started by the gradient buckets during
// backward (on autograd's device thread) overlap with the rest of backward. A host read of the
// result (.item(), .cpu()) waits for the current stream, hence for the reduction.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "dpo/dist/dist.h"
#include "dpo/error.h"

namespace dpo {
namespace {

void check_cuda(cudaError_t code, const char* call, const char* file, int line) {
  if (code != cudaSuccess) fail("{}:{}: {} failed: {}", file, line, call, cudaGetErrorString(code));
}
void check_nccl(ncclResult_t code, const char* call, const char* file, int line) {
  if (code != ncclSuccess) fail("{}:{}: {} failed: {}", file, line, call, ncclGetErrorString(code));
}
#define DPO_CUDA_CHECK(call) ::dpo::check_cuda((call), #call, __FILE__, __LINE__)
#define DPO_NCCL_CHECK(call) ::dpo::check_nccl((call), #call, __FILE__, __LINE__)

ncclDataType_t nccl_type_of(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return ncclFloat;
    case at::kDouble: return ncclDouble;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclHalf;
    default: fail("nccl all_reduce_sum: unsupported dtype {}", c10::toString(type));
  }
}

// A CUDA event for ordering only (no timing: cheaper to record and wait on).
class OrderingEvent {
 public:
  OrderingEvent() { DPO_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~OrderingEvent() { cudaEventDestroy(event_); }
  OrderingEvent(const OrderingEvent&) = delete;
  OrderingEvent& operator=(const OrderingEvent&) = delete;
  void record(cudaStream_t stream) { DPO_CUDA_CHECK(cudaEventRecord(event_, stream)); }
  void block(cudaStream_t stream) const { DPO_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }
  bool done() const {
    const cudaError_t state = cudaEventQuery(event_);
    if (state == cudaErrorNotReady) return false;
    DPO_CUDA_CHECK(state);
    return true;
  }

 private:
  cudaEvent_t event_ = nullptr;
};

// test(): whether the all-reduce has finished on the device; wait(): the current stream of the
// calling thread waits for it (the host does not).
class NcclPendingReduction final : public PendingReduction {
 public:
  NcclPendingReduction(std::unique_ptr<OrderingEvent> done, c10::DeviceIndex device)
      : done_(std::move(done)), device_(device) {}
  ~NcclPendingReduction() override {
    try {
      wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dpo: error: unfinished reduction: %s\n", e.what());
    }
  }
  bool test() override { return done_->done(); }
  void wait() override {
    if (ordered_) return;
    done_->block(c10::cuda::getCurrentCUDAStream(device_).stream());
    ordered_ = true;
  }

 private:
  std::unique_ptr<OrderingEvent> done_;
  c10::DeviceIndex device_;
  bool ordered_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& bootstrap, int cuda_device)
      : bootstrap_(bootstrap), device_(static_cast<c10::DeviceIndex>(cuda_device)) {
    const c10::cuda::CUDAGuard on_device(device_);
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (bootstrap_.rank() == 0) DPO_NCCL_CHECK(ncclGetUniqueId(&id));
    std::string bytes(reinterpret_cast<const char*>(&id), sizeof id);
    bootstrap_.broadcast_string(bytes, 0);
    if (bytes.size() != sizeof id) fail("nccl: received a unique id of {} bytes, expected {}", bytes.size(), sizeof id);
    std::memcpy(&id, bytes.data(), sizeof id);
    DPO_NCCL_CHECK(ncclCommInitRank(&comm_, bootstrap_.world_size(), id, bootstrap_.rank()));
    side_stream_.emplace(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_));
    if (bootstrap_.rank() == 0) {  // a process makes one (Session::start_run): one line per run
      int version = 0;
      DPO_NCCL_CHECK(ncclGetVersion(&version));
      std::fprintf(stderr, "dpo: NCCL %d.%d.%d on %d ranks\n", version / 10000, (version / 100) % 100, version % 100,
                   bootstrap_.world_size());
    }
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return bootstrap_.rank(); }
  int world_size() const override { return bootstrap_.world_size(); }
  std::string name() const override { return "nccl"; }
  bool supports_overlap() const override { return true; }
  bool starts_from_any_thread() const override { return true; }

  void all_reduce_sum(at::Tensor& tensor) override { start_all_reduce_sum(tensor)->wait(); }

  std::unique_ptr<PendingReduction> start_all_reduce_sum(at::Tensor& tensor) override {
    require_reducible(tensor);
    const ncclDataType_t type = nccl_type_of(tensor.scalar_type());
    const c10::cuda::CUDAGuard on_device(device_);
    const cudaStream_t side = side_stream_->stream();
    OrderingEvent queued;  // everything queued on the current stream so far: the gradient
    queued.record(c10::cuda::getCurrentCUDAStream(device_).stream());
    queued.block(side);
    // Counts are elements, not bytes.
    void* data = tensor.data_ptr();
    DPO_NCCL_CHECK(ncclAllReduce(data, data, static_cast<size_t>(tensor.numel()), type, ncclSum, comm_, side));
    // The caching allocator must not hand this memory to other work before the side stream is done.
    c10::cuda::CUDACachingAllocator::recordStream(tensor.storage().data_ptr(), *side_stream_);
    auto done = std::make_unique<OrderingEvent>();
    done->record(side);
    return std::make_unique<NcclPendingReduction>(std::move(done), device_);
  }

  void all_reduce_sum(std::vector<double>& values) override { bootstrap_.all_reduce_sum(values); }
  double all_reduce_max(double value) override { return bootstrap_.all_reduce_max(value); }
  void broadcast_string(std::string& text, int root) override { bootstrap_.broadcast_string(text, root); }
  void barrier() override { bootstrap_.barrier(); }

 private:
  void require_reducible(const at::Tensor& tensor) const {
    if (!tensor.defined() || !tensor.is_cuda()) fail("nccl all_reduce_sum: tensor is not a CUDA tensor");
    if (!tensor.is_contiguous()) fail("nccl all_reduce_sum: tensor is not contiguous");
    if (tensor.device().index() != device_)
      fail("nccl all_reduce_sum: tensor is on cuda:{}, this communicator on cuda:{}", tensor.device().index(), device_);
  }

  Communicator& bootstrap_;
  c10::DeviceIndex device_;
  ncclComm_t comm_ = nullptr;
  std::optional<c10::cuda::CUDAStream> side_stream_;  // from libtorch's pool: libtorch owns it
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int cuda_device) {
  return std::make_unique<NcclCommunicator>(bootstrap, cuda_device);
}

}  // namespace dpo
