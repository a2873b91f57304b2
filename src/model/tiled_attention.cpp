// Attention as whole [heads, T, T] score tensors (libtorch's way: a batched product, a mask, a
// softmax, each a pass over memory) spent most of a step outside its products here: on the 5M
// Llama of `dpo bench` (rows of 384 with prefix sharing) one layer's attention took ~35 ms forward
// and backward for ~10 ms of products, and under prefix sharing 61% of those scores are masked
// (a rejected response never looks at the chosen one, no token at a later one).
//
// So each row is cut into query tiles of up to kTileRows tokens within one segment (a run of one
// document and branch), and a tile reads only the key spans TokenLayout's rule lets it see: the
// earlier segments of its document on its path (whole), and its own segment up to the tile's end
// (causal). The tile's scores [rows, keys] stay in cache from product to softmax to product, and
// masked tiles are never computed. Every product is a oneDNN GEMM on raw pointers (one thread
// each, the (row, head) pairs spread over the threads), in float32 or bfloat16 with float32
// results; the probabilities are kept for backward, only where a gradient is wanted, in the
// products' dtype: bfloat16 probabilities are what the output's product took, and backward's
// softmax gradient and the values' gradient read them as they are (half the memory of float32,
// one store less per score in forward and in backward).
#include "dpo/model/tiled_attention.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "dpo/kernels/float_lanes.h"
#include "dpo/kernels/float_matmul.h"

namespace dpo {
namespace {

// Rows of a query tile: its scores (64 x keys floats) stay in a core's cache for rows of a few
// thousand keys. 64 ran faster than 32 and 128 on `dpo bench`'s shapes c and d, in fp32 and
// bf16-mixed (5-14%, one run each).
constexpr int64_t kTileRows = 64;

struct Span {
  int64_t begin, end;
};
// Queries [begin, end) of a row read the keys of spans [first_span, last_span) of Plan::spans,
// `keys` in all; their probabilities sit at `probs` within a head's share.
struct Tile {
  int64_t begin, end;
  size_t first_span, last_span;
  int64_t keys, probs;
};

// The tiles of every row: row b's are tiles[row_tiles[b] .. row_tiles[b + 1]), and one head of it
// keeps row_probs[b + 1] - row_probs[b] probabilities.
struct Plan {
  std::vector<size_t> row_tiles{0};
  std::vector<Tile> tiles;
  std::vector<Span> spans;
  std::vector<int64_t> row_probs{0};
  int64_t widest = 0;  // most keys of a tile
};

// Adds [begin, end) to the spans of the tile being built (from `first` on), joined to the last one
// when they touch.
void add_span(std::vector<Span>& spans, size_t first, Span span) {
  if (spans.size() > first && spans.back().end == span.begin)
    spans.back().end = span.end;
  else
    spans.push_back(span);
}

// Calls f(span begin, keys, column, first) for each key span of `tile`: `column` is where its
// keys start among the tile's, `first` whether it is the tile's first span.
template <typename F>
void for_each_span(const Plan& plan, const Tile& tile, F&& f) {
  int64_t column = 0;
  for (size_t i = tile.first_span; i < tile.last_span; ++i) {
    const Span& span = plan.spans[i];
    f(span.begin, span.end - span.begin, column, i == tile.first_span);
    column += span.end - span.begin;
  }
}

// One row of `length` tokens; document and branch null for a plain causal row.
void add_row(Plan& plan, const int64_t* document, const int64_t* branch, int64_t length) {
  struct Segment {
    int64_t begin, end, document, branch;
  };
  std::vector<Segment> segments;
  for (int64_t t = 0; t < length; ++t) {
    const int64_t d = document ? document[t] : 0, b = branch ? branch[t] : 0;
    if (segments.empty() || segments.back().document != d || segments.back().branch != b)
      segments.push_back({t, t + 1, d, b});
    else
      segments.back().end = t + 1;
  }
  int64_t probs = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const Segment& own = segments[s];
    for (int64_t begin = own.begin; begin < own.end; begin += kTileRows) {
      Tile tile{begin, std::min(begin + kTileRows, own.end), plan.spans.size(), 0, 0, probs};
      // TokenLayout's rule: an earlier token of the same document, on the trunk (branch 0) or on
      // this token's own branch.
      for (size_t e = 0; e < s; ++e)
        if (segments[e].document == own.document && (segments[e].branch == 0 || segments[e].branch == own.branch))
          add_span(plan.spans, tile.first_span, {segments[e].begin, segments[e].end});
      add_span(plan.spans, tile.first_span, {own.begin, tile.end});
      tile.last_span = plan.spans.size();
      for (size_t i = tile.first_span; i < tile.last_span; ++i) tile.keys += plan.spans[i].end - plan.spans[i].begin;
      probs += (tile.end - tile.begin) * tile.keys;
      plan.widest = std::max(plan.widest, tile.keys);
      plan.tiles.push_back(tile);
    }
  }
  plan.row_tiles.push_back(plan.tiles.size());
  plan.row_probs.push_back(plan.row_probs.back() + probs);
}

// The plan of [rows, length] tokens laid out by `documents` and `branches` (TokenLayout's; both
// undefined or empty: plain causal rows).
Plan make_plan(const at::Tensor& documents, const at::Tensor& branches, int64_t rows, int64_t length) {
  Plan plan;
  if (!documents.defined() || documents.numel() == 0) {
    for (int64_t b = 0; b < rows; ++b) add_row(plan, nullptr, nullptr, length);
    return plan;
  }
  const at::Tensor document = documents.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor branch = branches.to(at::kCPU, at::kLong).contiguous();
  TORCH_CHECK(document.dim() == 2 && document.size(0) == rows && document.size(1) == length &&
                  branch.sizes() == document.sizes(),
              "tiled_attention: a layout of [", rows, ", ", length, "] tokens was expected");
  for (int64_t b = 0; b < rows; ++b)
    add_row(plan, document.data_ptr<int64_t>() + b * length, branch.data_ptr<int64_t>() + b * length, length);
  return plan;
}

// The row loops below work on 16 float32 lanes (kernels/float_lanes.h).
using namespace lanes;

// The softmax of a tile's scaled scores `scale` s, s [rows, keys], row r (query `first + r`) over
// its first keys - (last - 1 - query) keys (the rest are its own segment's later tokens) and zero
// after: in place when Op is float32, else rounded to bfloat16 into `rounded` only (the product's
// operand, and what backward keeps), in the same pass (separate rounding passes over the tiles,
// here and in backward, took ~3% of a bf16-mixed step of `dpo bench`'s shape d). The scale is
// applied here rather than as the product's alpha: oneDNN's bfloat16 GEMM takes an alpha other
// than 1 on a slow path (kernels/float_matmul.cpp), and the scaling passes around it cost another
// ~1% of that step.
template <typename Op>
__attribute__((always_inline)) inline void softmax_rows(float* s, int64_t rows, int64_t keys, int64_t first,
                                                        int64_t last, float scale, Op* rounded) {
  constexpr float kInfinity = std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * keys;
    const int64_t seen = keys - (last - 1 - (first + r));
    Floats tops = Floats{} - kInfinity, v{};
    for (int64_t j = 0; j < seen; j += kLanes) {
      load(v, row + j, seen - j, -kInfinity);
      tops = tops > v ? tops : v;
    }
    float top = -kInfinity;
    for (int64_t i = 0; i < kLanes; ++i) top = std::max(top, tops[i]);
    Floats sums{};
    for (int64_t j = 0; j < seen; j += kLanes) {
      load(v, row + j, seen - j, top);
      v = (v - top) * scale;
      exp_nonpositive(v);
      for (int64_t i = seen - j; i < kLanes; ++i) v[i] = 0;  // lanes past the row
      sums += v;
      store(row + j, v, seen - j);
    }
    const float inverse = 1.0F / sum(sums);
    Op* out;
    if constexpr (std::is_same_v<Op, float>)
      out = row;
    else
      out = rounded + r * keys;
    for (int64_t j = 0; j < seen; j += kLanes) {
      load(v, row + j, seen - j, 0);
      v *= inverse;
      store(out + j, v, seen - j);
    }
    std::fill(out + seen, out + keys, Op(0.0F));
  }
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void softmax_rows_float(float* s, int64_t rows,
                                                                                       int64_t keys, int64_t first,
                                                                                       int64_t last, float scale) {
  softmax_rows<float>(s, rows, keys, first, last, scale, nullptr);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void softmax_rows_bfloat16(float* s, int64_t rows,
                                                                                          int64_t keys, int64_t first,
                                                                                          int64_t last, float scale,
                                                                                          at::BFloat16* rounded) {
  softmax_rows<at::BFloat16>(s, rows, keys, first, last, scale, rounded);
}

// The unscaled scores' gradient from the probabilities p (as forward kept them, in Op) and their
// gradient d [rows, keys]: `scale` p (d - sum_j p d) row by row, in place of d (Op float32), or
// rounded to bfloat16 into ds (Op bfloat16: the operand of the tile's products).
template <typename Op>
__attribute__((always_inline)) inline void softmax_gradient_rows(const Op* p, float* d, int64_t rows, int64_t keys,
                                                                 float scale, Op* ds) {
  for (int64_t r = 0; r < rows; ++r) {
    const Op* pr = p + r * keys;
    float* dr = d + r * keys;
    Floats dots{}, pv{}, dv{};
    for (int64_t j = 0; j < keys; j += kLanes) {
      load(pv, pr + j, keys - j, 0);
      load(dv, dr + j, keys - j, 0);
      dots += pv * dv;
    }
    const float dot = sum(dots);
    for (int64_t j = 0; j < keys; j += kLanes) {
      load(pv, pr + j, keys - j, 0);
      load(dv, dr + j, keys - j, 0);
      const Floats gradient = pv * (dv - dot) * scale;
      if constexpr (std::is_same_v<Op, float>)
        store(dr + j, gradient, keys - j);
      else
        store(ds + r * keys + j, gradient, keys - j);
    }
  }
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void softmax_gradient_rows_float(const float* p, float* d,
                                                                                                int64_t rows,
                                                                                                int64_t keys,
                                                                                                float scale) {
  softmax_gradient_rows<float>(p, d, rows, keys, scale, nullptr);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void softmax_gradient_rows_bfloat16(
    const at::BFloat16* p, float* d, int64_t rows, int64_t keys, float scale, at::BFloat16* ds) {
  softmax_gradient_rows<at::BFloat16>(p, d, rows, keys, scale, ds);
}

// The tile's softmax, returning the product's operand: s itself in float32, else its bfloat16
// rounding, written to `rounded`.
template <typename Op>
const Op* softmax_operand(float* s, int64_t rows, int64_t keys, int64_t first, int64_t last, float scale,
                          Op* rounded) {
  if constexpr (std::is_same_v<Op, float>) {
    (void)rounded;
    softmax_rows_float(s, rows, keys, first, last, scale);
    return s;
  } else {
    softmax_rows_bfloat16(s, rows, keys, first, last, scale, rounded);
    return rounded;
  }
}

// The scores' gradient of a tile, the operand of its products: in place of ds as float32, or
// rounded to bfloat16 into `rounded_ds`.
template <typename Op>
const Op* softmax_gradient_operand(const Op* p, float* ds, int64_t rows, int64_t keys, float scale,
                                   std::vector<Op>& rounded_ds) {
  if constexpr (std::is_same_v<Op, float>) {
    (void)rounded_ds;
    softmax_gradient_rows_float(p, ds, rows, keys, scale);
    return ds;
  } else {
    softmax_gradient_rows_bfloat16(p, ds, rows, keys, scale, rounded_ds.data());
    return rounded_ds.data();
  }
}

// Times a thread's products for the matmul clock; the sum over threads is divided by the threads
// that ran, as they ran side by side.
struct ProductTime {
  std::atomic<int64_t> nanoseconds{0};
  template <typename F>
  void run(F&& product) {
    const auto start = std::chrono::steady_clock::now();
    product();
    nanoseconds += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  }
  void report(int64_t work) const {
    const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), work));
    add_to_matmul_clock(static_cast<double>(nanoseconds.load()) * 1e-9 / static_cast<double>(threads));
  }
};

// Shapes of one call: q [B, H, T, D], k and v [B, KV, T, D].
struct Shape {
  int64_t B, H, KV, T, D;
  int64_t kv_head(int64_t h) const { return h / (H / KV); }  // the key/value head query head h reads
  float scale() const { return 1.0F / std::sqrt(static_cast<float>(D)); }
};

// Where an operand's element (b, h, t, d) lives: data + b * batch + h * head + t * row + d. So q, k
// and v are read where the projections wrote them ([B, T, heads, D] within a wider row: `row` is
// the row's width) and the output and the gradients are written as [B, T, heads, D], which the
// projections after them read as [B, T, heads * D] without a copy.
template <typename T>
struct Heads {
  T* data;
  int64_t batch, head, row;
  T* at(int64_t b, int64_t h) const { return data + b * batch + h * head; }
};
template <typename T>
Heads<T> heads_of(const at::Tensor& t) {
  return {t.data_ptr<std::remove_const_t<T>>(), t.stride(0), t.stride(1), t.stride(2)};
}

// out [B, H, T, D] float32; probs (null: not kept) one block per (row, head) as Plan lays them out,
// in the products' dtype Op: the probabilities as the output's product took them.
template <typename Op>
void forward(const Plan& plan, const Shape& x, Heads<const Op> q, Heads<const Op> k, Heads<const Op> v, Heads<float> out,
             Op* probs) {
  ProductTime time;
  const int64_t work = x.B * x.H;
  at::parallel_for(0, work, 1, [&](int64_t begin, int64_t end) {
    // Float32 scores are computed in place of kept float32 probabilities, else in cache-sized
    // scratch; bfloat16 probabilities are written where they are kept, else to scratch too.
    constexpr bool kFloat = std::is_same_v<Op, float>;
    const auto scratch_size = static_cast<size_t>(kTileRows * plan.widest);
    std::vector<float> scratch(kFloat && probs ? 0 : scratch_size);
    std::vector<Op> rounded(kFloat || probs ? 0 : scratch_size);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / x.H, h = bh % x.H;
      const Op *qh = q.at(b, h), *kh = k.at(b, x.kv_head(h)), *vh = v.at(b, x.kv_head(h));
      float* oh = out.at(b, h);
      Op* head_probs = probs ? probs + x.H * plan.row_probs[b] + h * (plan.row_probs[b + 1] - plan.row_probs[b]) : nullptr;
      for (size_t t = plan.row_tiles[b]; t < plan.row_tiles[b + 1]; ++t) {
        const Tile& tile = plan.tiles[t];
        const int64_t m = tile.end - tile.begin, n = tile.keys;
        Op* kept = head_probs ? head_probs + tile.probs : nullptr;
        float* s = kFloat && kept ? reinterpret_cast<float*>(kept) : scratch.data();
        time.run([&] {
          for_each_span(plan, tile, [&](int64_t begin, int64_t keys, int64_t column, bool) {
            gemm_rows('N', 'T', m, keys, x.D, 1.0F, qh + tile.begin * q.row, q.row, kh + begin * k.row, k.row, 0.0F,
                      s + column, n);
          });
        });
        const Op* p = softmax_operand(s, m, n, tile.begin, tile.end, x.scale(), kept ? kept : rounded.data());
        time.run([&] {
          for_each_span(plan, tile, [&](int64_t begin, int64_t keys, int64_t column, bool first) {
            gemm_rows('N', 'N', m, x.D, keys, 1.0F, p + column, n, vh + begin * v.row, v.row, first ? 0.0F : 1.0F,
                      oh + tile.begin * out.row, out.row);
          });
        });
      }
    }
  });
  time.report(work);
}

// Gradients: dq [B, H, T, D], and per query head dk, dv [B, H, T, D] (zeroed by the caller), all
// float32, from the output's gradient g.
template <typename Op>
void backward(const Plan& plan, const Shape& x, Heads<const Op> q, Heads<const Op> k, Heads<const Op> v,
              const Op* probs, Heads<const Op> g, Heads<float> dq, Heads<float> dk, Heads<float> dv) {
  ProductTime time;
  const int64_t work = x.B * x.H;
  at::parallel_for(0, work, 1, [&](int64_t begin, int64_t end) {
    const auto scratch_size = static_cast<size_t>(kTileRows * plan.widest);
    std::vector<float> ds(scratch_size);
    std::vector<Op> rounded_ds(std::is_same_v<Op, float> ? 0 : scratch_size);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / x.H, h = bh % x.H;
      const Op *qh = q.at(b, h), *kh = k.at(b, x.kv_head(h)), *vh = v.at(b, x.kv_head(h)), *gh = g.at(b, h);
      float *dqh = dq.at(b, h), *dkh = dk.at(b, h), *dvh = dv.at(b, h);
      const Op* head_probs = probs + x.H * plan.row_probs[b] + h * (plan.row_probs[b + 1] - plan.row_probs[b]);
      for (size_t t = plan.row_tiles[b]; t < plan.row_tiles[b + 1]; ++t) {
        const Tile& tile = plan.tiles[t];
        const int64_t m = tile.end - tile.begin, n = tile.keys;
        const Op* p = head_probs + tile.probs;
        time.run([&] {
          for_each_span(plan, tile, [&](int64_t begin, int64_t keys, int64_t column, bool) {
            gemm_rows('N', 'T', m, keys, x.D, 1.0F, gh + tile.begin * g.row, g.row, vh + begin * v.row, v.row, 0.0F,
                      ds.data() + column, n);
          });
        });
        const Op* ds_op = softmax_gradient_operand(p, ds.data(), m, n, x.scale(), rounded_ds);
        time.run([&] {
          for_each_span(plan, tile, [&](int64_t begin, int64_t keys, int64_t column, bool first) {
            gemm_rows('N', 'N', m, x.D, keys, 1.0F, ds_op + column, n, kh + begin * k.row, k.row, first ? 0.0F : 1.0F,
                      dqh + tile.begin * dq.row, dq.row);
            gemm_rows('T', 'N', keys, x.D, m, 1.0F, ds_op + column, n, qh + tile.begin * q.row, q.row, 1.0F,
                      dkh + begin * dk.row, dk.row);
            gemm_rows('T', 'N', keys, x.D, m, 1.0F, p + column, n, gh + tile.begin * g.row, g.row, 1.0F,
                      dvh + begin * dv.row, dv.row);
          });
        });
      }
    }
  });
  time.report(work);
}

// An operand as the products read it: in `dtype`, with unit stride along D and rows at least D
// apart. A view of a projection's output in the products' dtype is read where it is; a cast (or an
// unreadable layout) is one copy.
at::Tensor operand(const at::Tensor& t, at::ScalarType dtype) {
  const at::Tensor c = t.scalar_type() == dtype ? t : t.to(dtype);
  return c.stride(3) == 1 && c.stride(2) >= c.size(3) ? c : c.contiguous();
}

// A float32 [B, heads, T, D] tensor laid out as [B, T, heads, D] (see Heads).
at::Tensor time_major(const Shape& x, int64_t heads, const at::TensorOptions& options, bool zeroed) {
  const std::vector<int64_t> sizes{x.B, x.T, heads, x.D};
  return (zeroed ? at::zeros(sizes, options) : at::empty(sizes, options)).permute({0, 2, 1, 3});
}

// Per query head [B, H, T, D] (time_major's) summed over the query heads of each key/value head:
// [B, KV, T, D], laid out the same way.
at::Tensor per_key_value_head(const at::Tensor& per_query_head, const Shape& x) {
  if (x.H == x.KV) return per_query_head;
  return per_query_head.permute({0, 2, 1, 3}).view({x.B, x.T, x.KV, x.H / x.KV, x.D}).sum(3).permute({0, 2, 1, 3});
}

struct TiledAttention : torch::autograd::Function<TiledAttention> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, at::ScalarType dtype, const at::Tensor& documents,
                            const at::Tensor& branches) {
    const Shape x{q.size(0), q.size(1), k.size(1), q.size(2), q.size(3)};
    TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == x.B && k.size(2) == x.T && k.size(3) == x.D && x.KV > 0 &&
                    x.H % x.KV == 0,
                "tiled_attention: q [B, H, T, D] and k, v [B, KV, T, D] with H a multiple of KV were expected");
    const at::Tensor qc = operand(q, dtype), kc = operand(k, dtype), vc = operand(v, dtype);
    const Plan plan = make_plan(documents, branches, x.B, x.T);
    const bool keep = q.requires_grad() || k.requires_grad() || v.requires_grad();
    // The probabilities backward reads, in the products' dtype (bfloat16: half the memory, and
    // already the operand of the values' gradient).
    at::Tensor probs = at::empty({keep ? x.H * plan.row_probs.back() : 0}, q.options().dtype(dtype));
    const at::Tensor out = time_major(x, x.H, q.options().dtype(at::kFloat), false);
    if (dtype == at::kFloat)
      dpo::forward(plan, x, heads_of<const float>(qc), heads_of<const float>(kc), heads_of<const float>(vc),
                   heads_of<float>(out), keep ? probs.data_ptr<float>() : nullptr);
    else
      dpo::forward(plan, x, heads_of<const at::BFloat16>(qc), heads_of<const at::BFloat16>(kc),
                   heads_of<const at::BFloat16>(vc), heads_of<float>(out),
                   keep ? probs.data_ptr<at::BFloat16>() : nullptr);
    ctx->save_for_backward({qc, kc, vc, probs, documents, branches});
    ctx->saved_data["dtypes"] = std::vector<int64_t>{static_cast<int64_t>(q.scalar_type()), static_cast<int64_t>(k.scalar_type()),
                                                     static_cast<int64_t>(v.scalar_type())};
    return out.to(q.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qc = saved[0], &kc = saved[1], &vc = saved[2], &probs = saved[3];
    const Shape x{qc.size(0), qc.size(1), kc.size(1), qc.size(2), qc.size(3)};
    const Plan plan = make_plan(saved[4], saved[5], x.B, x.T);
    const auto dtypes = ctx->saved_data["dtypes"].toIntVector();
    const at::Tensor g = operand(grad_outputs.at(0), qc.scalar_type());
    const auto f32 = qc.options().dtype(at::kFloat);
    const at::Tensor dq = time_major(x, x.H, f32, false), dk = time_major(x, x.H, f32, true),
                     dv = time_major(x, x.H, f32, true);
    if (qc.scalar_type() == at::kFloat)
      dpo::backward(plan, x, heads_of<const float>(qc), heads_of<const float>(kc), heads_of<const float>(vc),
                    probs.data_ptr<float>(), heads_of<const float>(g), heads_of<float>(dq), heads_of<float>(dk),
                    heads_of<float>(dv));
    else
      dpo::backward(plan, x, heads_of<const at::BFloat16>(qc), heads_of<const at::BFloat16>(kc),
                    heads_of<const at::BFloat16>(vc), probs.data_ptr<at::BFloat16>(), heads_of<const at::BFloat16>(g),
                    heads_of<float>(dq), heads_of<float>(dk), heads_of<float>(dv));
    auto as = [&](const at::Tensor& t, int64_t which) { return t.to(static_cast<at::ScalarType>(dtypes[which])); };
    return {as(dq, 0), as(per_key_value_head(dk, x), 1), as(per_key_value_head(dv, x), 2), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool takes_tiled_attention(at::ScalarType dtype, const at::Device& device) {
  return device.is_cpu() && ((dtype == at::kFloat && float32_gemm_loaded()) ||
                             (dtype == at::kBFloat16 && bfloat16_products_in_float32()));
}

at::Tensor tiled_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::ScalarType dtype,
                           const TokenLayout& layout) {
  TORCH_CHECK(takes_tiled_attention(dtype, q.device()), "tiled_attention: no CPU GEMM for ", dtype, " products");
  // Autograd takes no undefined input: an empty layout stands for plain causal rows.
  const at::Tensor none = at::empty({0}, at::kLong);
  return layout.defined() ? TiledAttention::apply(q, k, v, dtype, layout.documents, layout.branches)
                          : TiledAttention::apply(q, k, v, dtype, none, none);
}

int64_t tiled_attention_scores(const TokenLayout& layout, int64_t rows, int64_t length) {
  return (layout.defined() ? make_plan(layout.documents, layout.branches, rows, length)
                            : make_plan({}, {}, rows, length))
      .row_probs.back();
}

}  // namespace dpo
