// oneDNN has two ways to multiply bfloat16 matrices into float32: the BLAS-like GEMM function that
// float_matmul.cpp calls (dnnl_gemm_bf16bf16f32) and the matmul primitive. On an Intel Xeon with
// AMX (2 cores, oneDNN 2.6.3, one run each way side by side), the primitive's AMX kernel
// ("brg:avx512_core_amx_bf16") ran the products of `dpo bench`'s shapes with an inner size of 256
// at 1.35-1.9x the GEMM function's speed (the 5M Llama's projections, its head's chunks), GPT-2
// small's head chunks (inner 768, 50304 columns) at 1.6x and its forward projections at 1.05-1.2x,
// but lost by 10-25% where the inner size was 1536 or more (the weights' gradients, the products
// over 3072 features). Its float32 kernel gained nothing over dnnl_sgemm. So bfloat16 products
// with an inner size of at most 1024 take the primitive where its implementation for the shape
// is AMX's, and everything else stays on the GEMM function: a choice that depends on the shape and
// the CPU only, so that a run and its resumption, or two ranks, compute the same rows the same way.
// The primitive also adds a layer's bias (GPT-2's) as it writes the results, where the GEMM
// function's product starts from a copy of the bias in every row.
//
// A primitive is made for one shape (oneDNN's AMX kernel takes no run-time sizes: with them the
// primitive falls back to the GEMM function's kernel) in ~0.3-2 ms, so primitives are cached by
// shape; only the largest multiple of 64 of the rows takes one, so that a growing number of rows
// (generation without a KV cache, batches of varied length) makes a new primitive every 64 rows
// at most, and the caller computes the few rows left.
//
// oneDNN's C interface is looked up in the loaded libraries, as float_matmul.cpp does, so that the
// build needs no oneDNN headers: its handles are opaque pointers, and its descriptors (plain structs
// in oneDNN 2.x: 696 and 2800 bytes in 2.6) live in larger aligned buffers that only oneDNN reads.
// oneDNN 3 replaced these functions; there the lookup fails and nothing is taken.
#include "dpo/kernels/bfloat16_matmul_primitive.h"

#include <dlfcn.h>

#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include <c10/util/Exception.h>

namespace dpo {
namespace {

using Handle = void*;
using Dims = std::array<int64_t, 12>;  // dnnl_dims_t
struct ExecArg {                       // dnnl_exec_arg_t
  int arg;
  Handle memory;
};
// dnnl_types.h (2.x): engine kind, data types, the query for the implementation's name, arguments.
constexpr int kCpu = 1, kBFloat16 = 2, kFloat32 = 3, kImplementationName = 8;
constexpr int kArgSource = 1, kArgWeights = 33, kArgBias = 41, kArgDestination = 17;
constexpr unsigned kStreamDefault = 1;

struct Api {
  int (*engine_create)(Handle*, int, size_t);
  int (*stream_create)(Handle*, Handle, unsigned);
  int (*memory_desc_init_by_strides)(void*, int, const int64_t*, int, const int64_t*);
  int (*matmul_desc_init)(void*, const void*, const void*, const void*, const void*);
  int (*primitive_attr_create)(Handle*);
  int (*primitive_attr_destroy)(Handle);
  int (*post_ops_create)(Handle*);
  int (*post_ops_append_sum)(Handle, float);
  int (*post_ops_destroy)(Handle);
  int (*primitive_attr_set_post_ops)(Handle, Handle);
  int (*primitive_desc_create)(Handle*, const void*, Handle, Handle, Handle);
  int (*primitive_desc_query)(Handle, int, int, void*);
  int (*primitive_desc_destroy)(Handle);
  int (*primitive_create)(Handle*, Handle);
  int (*primitive_destroy)(Handle);
  int (*memory_create)(Handle*, const void*, Handle, void*);
  int (*memory_destroy)(Handle);
  int (*primitive_execute)(Handle, Handle, int, const ExecArg*);
  int (*stream_wait)(Handle);
};

template <typename F>
bool look_up(F& f, const char* name) {
  f = reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
  return f != nullptr;
}

// A memory descriptor, a matmul descriptor: oneDNN's structs, in buffers larger than they are.
struct alignas(64) Descriptor {
  unsigned char bytes[2048];
};
struct alignas(64) OperationDescriptor {
  unsigned char bytes[8192];
};

struct Shape {
  char transa, transb;
  int64_t M, N, K, lda, ldb, ldc;
  bool accumulate, bias;
  bool operator<(const Shape& o) const {
    return std::tie(transa, transb, M, N, K, lda, ldb, ldc, accumulate, bias) <
           std::tie(o.transa, o.transb, o.M, o.N, o.K, o.lda, o.ldb, o.ldc, o.accumulate, o.bias);
  }
};
// A shape's primitive (null: declined, the GEMM function computes it) and the descriptors its
// memory objects are made from.
struct Entry {
  Handle primitive = nullptr;
  Descriptor a, b, c, bias;
};

constexpr int64_t kRowMultiple = 64;
constexpr int64_t kLargestInner = 1024;
constexpr size_t kMostPrimitives = 512;  // then all are dropped and made again as needed

struct State {
  Api api{};
  Handle engine = nullptr, stream = nullptr;
  std::mutex mutex;  // the cache, and one product at a time (a primitive's scratch space is its own)
  std::map<Shape, Entry> cache;
  std::string implementation;
  std::atomic<int64_t> products{0};
};
State& state() {
  static State s;
  return s;
}

bool load(State& s) {
  Api& a = s.api;
  const bool found =
      look_up(a.engine_create, "dnnl_engine_create") && look_up(a.stream_create, "dnnl_stream_create") &&
      look_up(a.memory_desc_init_by_strides, "dnnl_memory_desc_init_by_strides") &&
      look_up(a.matmul_desc_init, "dnnl_matmul_desc_init") &&
      look_up(a.primitive_attr_create, "dnnl_primitive_attr_create") &&
      look_up(a.primitive_attr_destroy, "dnnl_primitive_attr_destroy") &&
      look_up(a.post_ops_create, "dnnl_post_ops_create") &&
      look_up(a.post_ops_append_sum, "dnnl_post_ops_append_sum") &&
      look_up(a.post_ops_destroy, "dnnl_post_ops_destroy") &&
      look_up(a.primitive_attr_set_post_ops, "dnnl_primitive_attr_set_post_ops") &&
      look_up(a.primitive_desc_create, "dnnl_primitive_desc_create") &&
      look_up(a.primitive_desc_query, "dnnl_primitive_desc_query") &&
      look_up(a.primitive_desc_destroy, "dnnl_primitive_desc_destroy") &&
      look_up(a.primitive_create, "dnnl_primitive_create") && look_up(a.primitive_destroy, "dnnl_primitive_destroy") &&
      look_up(a.memory_create, "dnnl_memory_create") && look_up(a.memory_destroy, "dnnl_memory_destroy") &&
      look_up(a.primitive_execute, "dnnl_primitive_execute") && look_up(a.stream_wait, "dnnl_stream_wait");
  return found && a.engine_create(&s.engine, kCpu, 0) == 0 && a.stream_create(&s.stream, s.engine, kStreamDefault) == 0;
}

// op(X) of a row-major operand stored with row stride ld: [rows, cols] itself ('N'), or the
// transpose of a stored [cols, rows] ('T').
bool describe(const Api& api, Descriptor& d, int64_t rows, int64_t cols, char trans, int64_t ld, int type) {
  const Dims dims{rows, cols};
  const Dims strides = trans == 'N' ? Dims{ld, 1} : Dims{1, ld};
  return api.memory_desc_init_by_strides(d.bytes, 2, dims.data(), type, strides.data()) == 0;
}

// The primitive of `shape`, or null where oneDNN cannot make one or makes one without AMX.
Entry make_entry(State& s, const Shape& shape) {
  const Api& api = s.api;
  Entry e;
  if (!describe(api, e.a, shape.M, shape.K, shape.transa, shape.lda, kBFloat16) ||
      !describe(api, e.b, shape.K, shape.N, shape.transb, shape.ldb, kBFloat16) ||
      !describe(api, e.c, shape.M, shape.N, 'N', shape.ldc, kFloat32) ||
      (shape.bias && !describe(api, e.bias, 1, shape.N, 'N', shape.N, kFloat32)))
    return e;
  OperationDescriptor op;
  if (api.matmul_desc_init(op.bytes, e.a.bytes, e.b.bytes, shape.bias ? e.bias.bytes : nullptr, e.c.bytes) != 0)
    return e;
  Handle attr = nullptr, post_ops = nullptr, desc = nullptr;
  if (api.primitive_attr_create(&attr) != 0) return e;
  bool ok = true;
  if (shape.accumulate) {  // C += A B as a sum post-op on the destination
    ok = api.post_ops_create(&post_ops) == 0 && api.post_ops_append_sum(post_ops, 1.0F) == 0 &&
         api.primitive_attr_set_post_ops(attr, post_ops) == 0;
  }
  if (ok && api.primitive_desc_create(&desc, op.bytes, attr, s.engine, nullptr) == 0) {
    const char* name = nullptr;
    if (api.primitive_desc_query(desc, kImplementationName, 0, &name) == 0 && name != nullptr &&
        std::strstr(name, "amx") != nullptr) {
      if (api.primitive_create(&e.primitive, desc) == 0)
        s.implementation = name;
      else
        e.primitive = nullptr;
    }
    api.primitive_desc_destroy(desc);
  }
  if (post_ops) api.post_ops_destroy(post_ops);
  api.primitive_attr_destroy(attr);
  return e;
}

void clear(State& s) {
  for (auto& [shape, entry] : s.cache)
    if (entry.primitive) s.api.primitive_destroy(entry.primitive);
  s.cache.clear();
}

// The product of `e` on these pointers: false where its memory objects could not be made (nothing
// was written); a failed execution throws, as C may then be partly written.
bool run(State& s, const Entry& e, const c10::BFloat16* A, const c10::BFloat16* B, const float* bias, float* C) {
  const Api& api = s.api;
  Handle a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  const bool made = api.memory_create(&a, e.a.bytes, s.engine, const_cast<c10::BFloat16*>(A)) == 0 &&
                    api.memory_create(&b, e.b.bytes, s.engine, const_cast<c10::BFloat16*>(B)) == 0 &&
                    api.memory_create(&c, e.c.bytes, s.engine, C) == 0 &&
                    (!bias || api.memory_create(&d, e.bias.bytes, s.engine, const_cast<float*>(bias)) == 0);
  int status = 0;
  if (made) {
    const ExecArg args[] = {{kArgSource, a}, {kArgWeights, b}, {kArgDestination, c}, {kArgBias, d}};
    status = api.primitive_execute(e.primitive, s.stream, bias ? 4 : 3, args);
    if (status == 0) status = api.stream_wait(s.stream);
  }
  for (Handle m : {a, b, c, d})
    if (m) api.memory_destroy(m);
  TORCH_CHECK(status == 0, "oneDNN's bfloat16 matmul primitive failed with status ", status);
  return made;
}

}  // namespace

bool load_bfloat16_matmul_primitive() {
  static const bool loaded = load(state());
  return loaded;
}

int64_t bfloat16_matmul_primitive_rows(char transa, char transb, int64_t M, int64_t N, int64_t K,
                                       const c10::BFloat16* A, int64_t lda, const c10::BFloat16* B, int64_t ldb,
                                       bool accumulate, const float* bias, float* C, int64_t ldc) {
  const int64_t rows = M / kRowMultiple * kRowMultiple;
  // A transposed A's first rows are columns of a wider stored matrix, which oneDNN's AMX kernel
  // does not read (it declined them): such products are taken whole or not at all.
  if (rows == 0 || (transa != 'N' && rows != M) || (accumulate && bias) || K > kLargestInner || N < 16 ||
      !load_bfloat16_matmul_primitive())
    return 0;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  const Shape shape{transa, transb, rows, N, K, lda, ldb, ldc, accumulate, bias != nullptr};
  auto found = s.cache.find(shape);
  if (found == s.cache.end()) {
    if (s.cache.size() >= kMostPrimitives) clear(s);
    found = s.cache.emplace(shape, make_entry(s, shape)).first;
  }
  const Entry& e = found->second;
  if (!e.primitive || !run(s, e, A, B, bias, C)) return 0;
  ++s.products;
  return rows;
}

std::string bfloat16_matmul_primitive_implementation() {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  return s.implementation;
}

int64_t bfloat16_matmul_primitive_products() { return state().products.load(); }

}  // namespace dpo
