#include "dpo/kernels/logit_rows.h"

#include <cmath>
#include <limits>

#include <ATen/Parallel.h>

#include "dpo/error.h"
#include "dpo/kernels/float_lanes.h"

namespace dpo {
namespace {
using namespace lanes;

constexpr float kInfinity = std::numeric_limits<float>::infinity();
// Columns summed in float32 lanes before the lanes are added to the row's float64 sum: 128 terms
// per lane, so that a row of 50k terms loses no more than a block's rounding.
constexpr int64_t kBlock = 2048;

// Rows per task of at::parallel_for: about 64k logits, so that a narrow vocabulary's rows are not
// handed out one by one.
int64_t grain(int64_t vocab) { return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(vocab, 1)); }

// log sum_v e^row[v].
__attribute__((always_inline)) inline float log_sum_exp(const float* row, int64_t vocab) {
  Floats tops = Floats{} - kInfinity, v{};
  for (int64_t j = 0; j < vocab; j += kLanes) {
    load(v, row + j, vocab - j, -kInfinity);
    tops = tops > v ? tops : v;  // a NaN may be passed over here; the sum below carries it
  }
  float top = -kInfinity;
  for (int64_t i = 0; i < kLanes; ++i) top = std::max(top, tops[i]);
  if (top == -kInfinity) return -kInfinity;  // every logit -inf (or an empty row)
  double total = 0;
  for (int64_t block = 0; block < vocab; block += kBlock) {
    const int64_t end = std::min(vocab, block + kBlock);
    Floats sums{};
    for (int64_t j = block; j < end; j += kLanes) {
      load(v, row + j, end - j, top);
      v -= top;
      exp_nonpositive(v);
      for (int64_t i = end - j; i < kLanes; ++i) v[i] = 0;  // lanes past the block
      sums += v;
    }
    total += static_cast<double>(sum(sums));
  }
  return top + static_cast<float>(std::log(total));
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void log_softmax_rows(const float* x, int64_t begin,
                                                                                     int64_t end, int64_t vocab,
                                                                                     const int64_t* targets,
                                                                                     float* lse, float* logps) {
  for (int64_t r = begin; r < end; ++r) {
    const float* row = x + r * vocab;
    lse[r] = log_sum_exp(row, vocab);
    logps[r] = row[targets[r]] - lse[r];
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void log_norm_rows(const float* x, int64_t begin,
                                                                                  int64_t end, int64_t vocab,
                                                                                  float* lse) {
  for (int64_t r = begin; r < end; ++r) lse[r] = log_sum_exp(x + r * vocab, vocab);
}

// out[r, v] = g[r] (1{v = targets[r]} - e^(x[r, v] - lse[r])), in Out's type (out may be x).
template <typename Out>
__attribute__((always_inline)) inline void gradient_rows(const float* x, int64_t begin, int64_t end, int64_t vocab,
                                                          const int64_t* targets, const float* lse, const float* g,
                                                          Out* out) {
  for (int64_t r = begin; r < end; ++r) {
    const float* row = x + r * vocab;
    Out* out_row = out + r * vocab;
    const float scale = g[r], log_norm = lse[r];
    const int64_t target = targets[r];
    Floats v{};
    for (int64_t j = 0; j < vocab; j += kLanes) {
      load(v, row + j, vocab - j, 0);
      v -= log_norm;
      exp_nonpositive(v);
      v *= -scale;
      if (target >= j && target < j + kLanes) v[target - j] += scale;
      store(out_row + j, v, vocab - j);
    }
  }
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void gradient_rows_in_place(
    float* x, int64_t begin, int64_t end, int64_t vocab, const int64_t* targets, const float* lse, const float* g) {
  gradient_rows(x, begin, end, vocab, targets, lse, g, x);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void gradient_rows_to_bfloat16(
    const float* x, int64_t begin, int64_t end, int64_t vocab, const int64_t* targets, const float* lse, const float* g,
    at::BFloat16* out) {
  gradient_rows(x, begin, end, vocab, targets, lse, g, out);
}

// A float32 [n] vector of the row count, contiguous, on the CPU: lse and the log-probs' gradient.
void check_rows(const at::Tensor& t, int64_t rows, const char* what) {
  if (t.scalar_type() != at::kFloat || !t.is_cpu() || t.dim() != 1 || t.size(0) != rows || !t.is_contiguous())
    fail("logit rows: {} must be float32 [{}], contiguous on the CPU; got {} {}", what, rows, c10::toString(t.scalar_type()),
         shape_text(t.sizes()));
}
void check_targets(const at::Tensor& targets, int64_t rows) {
  if (targets.scalar_type() != at::kLong || targets.dim() != 1 || targets.size(0) != rows || !targets.is_contiguous())
    fail("logit rows: targets must be int64 [{}], contiguous; got {} {}", rows, c10::toString(targets.scalar_type()),
         shape_text(targets.sizes()));
}

}  // namespace

bool takes_logit_rows(const at::Tensor& logits) {
  return logits.scalar_type() == at::kFloat && logits.is_cpu() && logits.layout() == at::kStrided && logits.dim() == 2 &&
         logits.stride(1) == 1 && (logits.size(0) <= 1 || logits.stride(0) == logits.size(1));
}

void log_softmax_at_targets(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& lse,
                            const at::Tensor& logps) {
  if (!takes_logit_rows(logits)) fail("log_softmax_at_targets: logits {} are not float32 CPU rows", shape_text(logits.sizes()));
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  check_targets(targets, rows);
  check_rows(lse, rows, "lse");
  check_rows(logps, rows, "logps");
  const float* x = logits.data_ptr<float>();
  const int64_t* t = targets.data_ptr<int64_t>();
  float *l = lse.data_ptr<float>(), *p = logps.data_ptr<float>();
  at::parallel_for(0, rows, grain(vocab),
                   [&](int64_t begin, int64_t end) { log_softmax_rows(x, begin, end, vocab, t, l, p); });
}

void log_sum_exp_rows(const at::Tensor& logits, const at::Tensor& lse) {
  if (!takes_logit_rows(logits)) fail("log_sum_exp_rows: logits {} are not float32 CPU rows", shape_text(logits.sizes()));
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  check_rows(lse, rows, "lse");
  const float* x = logits.data_ptr<float>();
  float* l = lse.data_ptr<float>();
  at::parallel_for(0, rows, grain(vocab), [&](int64_t begin, int64_t end) { log_norm_rows(x, begin, end, vocab, l); });
}

at::Tensor logp_gradient(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& lse,
                         const at::Tensor& g, at::ScalarType dtype) {
  if (!takes_logit_rows(logits)) fail("logp_gradient: logits {} are not float32 CPU rows", shape_text(logits.sizes()));
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  check_targets(targets, rows);
  check_rows(lse, rows, "lse");
  check_rows(g, rows, "the log-probs' gradient");
  float* x = logits.data_ptr<float>();
  const int64_t* t = targets.data_ptr<int64_t>();
  const float *l = lse.data_ptr<float>(), *s = g.data_ptr<float>();
  if (dtype == at::kBFloat16) {
    at::Tensor out = at::empty(logits.sizes(), logits.options().dtype(at::kBFloat16));
    at::BFloat16* o = out.data_ptr<at::BFloat16>();
    at::parallel_for(0, rows, grain(vocab), [&](int64_t begin, int64_t end) {
      gradient_rows_to_bfloat16(x, begin, end, vocab, t, l, s, o);
    });
    return out;
  }
  at::parallel_for(0, rows, grain(vocab),
                   [&](int64_t begin, int64_t end) { gradient_rows_in_place(x, begin, end, vocab, t, l, s); });
  return dtype == at::kFloat ? logits : logits.to(dtype);
}

}  // namespace dpo
