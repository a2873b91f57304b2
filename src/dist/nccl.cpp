// NCCL: gradient all-reduce of CUDA tensors; host values go to the MPI bootstrap communicator.
// Compiled only with DPO_WITH_NCCL. Uses the CUDA runtime directly (no c10::cuda: the CPU
// libtorch has none), so it cannot see libtorch's current stream: it synchronises the device
// before each collective, so the gradient is complete, and its own stream after it.
#include <nccl.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

#include <ATen/ATen.h>

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

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& bootstrap, int cuda_device) : bootstrap_(bootstrap), device_(cuda_device) {
    DPO_CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (bootstrap_.rank() == 0) DPO_NCCL_CHECK(ncclGetUniqueId(&id));
    std::string bytes(reinterpret_cast<const char*>(&id), sizeof id);
    bootstrap_.broadcast_string(bytes, 0);
    if (bytes.size() != sizeof id) fail("nccl: received a unique id of {} bytes, expected {}", bytes.size(), sizeof id);
    std::memcpy(&id, bytes.data(), sizeof id);
    DPO_NCCL_CHECK(ncclCommInitRank(&comm_, bootstrap_.world_size(), id, bootstrap_.rank()));
    DPO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    if (bootstrap_.rank() == 0) {  // a process makes one (Session::start_run): one line per run
      int version = 0;
      DPO_NCCL_CHECK(ncclGetVersion(&version));
      std::fprintf(stderr, "dpo: NCCL %d.%d.%d on %d ranks\n", version / 10000, (version / 100) % 100, version % 100,
                   bootstrap_.world_size());
    }
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  int rank() const override { return bootstrap_.rank(); }
  int world_size() const override { return bootstrap_.world_size(); }
  std::string name() const override { return "nccl"; }

  void all_reduce_sum(at::Tensor& tensor) override {
    if (!tensor.defined() || !tensor.is_cuda()) fail("nccl all_reduce_sum: tensor is not a CUDA tensor");
    if (!tensor.is_contiguous()) fail("nccl all_reduce_sum: tensor is not contiguous");
    if (tensor.device().index() != device_)
      fail("nccl all_reduce_sum: tensor is on cuda:{}, this communicator on cuda:{}", tensor.device().index(), device_);
    const ncclDataType_t type = nccl_type_of(tensor.scalar_type());
    DPO_CUDA_CHECK(cudaSetDevice(device_));
    // The gradient may still be in flight on libtorch's stream, which we cannot name here.
    DPO_CUDA_CHECK(cudaDeviceSynchronize());
    // Counts are elements, not bytes.
    const size_t count = static_cast<size_t>(tensor.numel());
    void* data = tensor.data_ptr();
    DPO_NCCL_CHECK(ncclAllReduce(data, data, count, type, ncclSum, comm_, stream_));
    DPO_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void all_reduce_sum(std::vector<double>& values) override { bootstrap_.all_reduce_sum(values); }
  double all_reduce_max(double value) override { return bootstrap_.all_reduce_max(value); }
  void broadcast_string(std::string& text, int root) override { bootstrap_.broadcast_string(text, root); }
  void barrier() override { bootstrap_.barrier(); }

 private:
  Communicator& bootstrap_;
  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int cuda_device) {
  return std::make_unique<NcclCommunicator>(bootstrap, cuda_device);
}

}  // namespace dpo
