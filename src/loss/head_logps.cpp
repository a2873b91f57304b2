#include "dpo/loss/head_logps.h"

#include <algorithm>
#include <vector>

#include <torch/csrc/autograd/custom_function.h>

#include "dpo/error.h"
#include "dpo/kernels/float_matmul.h"
#include "dpo/kernels/logit_rows.h"

namespace dpo {
namespace {

// Pieces of `count` items `width` wide, at most `elements` in all, split evenly over the fewest
// pieces: the rows (or vocabulary columns) per chunk of logits. Softmax chunks (WPO's normaliser)
// hold about 2^20 (4 MiB in float32), so that a chunk stays in cache between the passes over it.
// Product chunks hold about 2^24 (64 MiB in float32), still small next to [N, V]: the head's
// product ran at 60-75% of oneDNN's float32 peak on chunks of 83 rows of GPT-2's vocabulary (2^22
// logits) and at 85-95% on 256-512 rows, and a small remainder chunk ran slower still (measured on
// 2 Zen 5 cores). Under a hidden size of 512 they hold 2^22 (16 MiB): there a logit costs the
// product only 2 x hidden FLOPs, and writing a chunk out of cache and reading it back for the
// softmax outweighs the larger products. With 2040 rows of hidden 256 and a vocabulary of 8192,
// the head's forward and backward took 30-35% less time (bfloat16 products) and ~15% less
// (float32) in chunks of 2^22 logits than of 2^24; at hidden 768 with GPT-2's vocabulary, smaller
// chunks were no faster (2 Intel Xeon cores with AMX, alternated call by call).
constexpr int64_t kSoftmaxChunk = int64_t{1} << 20;
int64_t product_chunk(int64_t hidden) { return hidden < 512 ? int64_t{1} << 22 : int64_t{1} << 24; }
int64_t even_split(int64_t elements, int64_t width, int64_t count) {
  const int64_t most = std::clamp<int64_t>(elements / std::max<int64_t>(width, 1), 1, std::max<int64_t>(count, 1));
  const int64_t chunks = std::max<int64_t>((count + most - 1) / most, 1);
  return std::max<int64_t>((count + chunks - 1) / chunks, 1);
}

// The head's tiles, forward and backward: as many rows as keep a vocabulary block of a product
// chunk at least kMinColumns wide (all of them, at the batches a step scores), then blocks of
// vocabulary columns. Forward, each block of the weight is then read once per row tile, where
// chunks of whole vocabulary rows read all of it once per chunk: at shape c of `dpo bench` (1024
// scored rows, GPT-2's head) the head's forward took 237 ms in float32 and 123 ms in bfloat16
// products against 282 and 159 in chunks of 256 whole rows (2 Zen 5 cores). Backward writes the
// weight's gradient [V, d] once per row tile, each block by one product over all those rows, where
// chunks of rows each added their product into the whole [V, d] from a zeroed start, and each
// product had the chunk's few hundred rows as its inner size.
constexpr int64_t kMinColumns = 1024;
struct Tiles {
  int64_t rows, columns;
};
Tiles head_tiles(int64_t rows, int64_t vocab, int64_t hidden) {
  const int64_t chunk = product_chunk(hidden);
  const int64_t tile_rows = even_split(chunk, kMinColumns, rows);
  return {tile_rows, even_split(chunk, tile_rows, vocab)};
}

// out = a @ b + beta out in out's dtype; beta 0 ignores what out held. Float32 results of
// bfloat16 operands come from kernels/ (mixed precision); other mixed dtypes through a cast.
void add_product(at::Tensor out, const at::Tensor& a, const at::Tensor& b, float beta) {
  if (a.scalar_type() == out.scalar_type()) {
    if (beta == 0.0F)
      at::mm_out(out, a, b);
    else
      out.addmm_(a, b, beta);
  } else if (out.scalar_type() == at::kFloat) {
    add_product_in_float32(out, a, b, beta);
  } else if (beta == 0.0F) {
    out.copy_(at::mm(a, b));
  } else {
    out.mul_(beta).add_(at::mm(a, b).to(out.scalar_type()));
  }
}

// The logits h @ w^T of a chunk in the log-prob dtype: the head's product in the matmul dtype,
// then cast (libtorch's log_softmax and exp are slower on bfloat16 than the cast); bfloat16
// products with float32 results where kernels/ has them, no cast needed.
at::Tensor chunk_logits(const at::Tensor& h, const at::Tensor& w, at::ScalarType out) {
  if (out == at::kFloat) return product_in_float32(h, w.t());
  return at::mm(h, w.t()).to(out);
}

// Each row's log sum_v e^logits[r, v] into lse [n].
void row_log_norms(const at::Tensor& logits, const at::Tensor& lse) {
  if (takes_logit_rows(logits))
    log_sum_exp_rows(logits, lse);
  else
    lse.copy_(at::logsumexp(logits, -1));
}

// Of logits [n, V] (whole rows): each row's log-sum-exp into lse and its target's log-prob into logps.
void whole_row_logps(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& lse, const at::Tensor& logps) {
  if (takes_logit_rows(logits)) {
    log_softmax_at_targets(logits, targets, lse, logps);
  } else {
    lse.copy_(at::logsumexp(logits, -1));
    logps.copy_(logits.gather(1, targets.unsqueeze(1)).squeeze(1) - lse);
  }
}

// The gradient of sum_n g[n] logps[n] with respect to a block of logits [n, m] (recomputed or
// kept, overwritten where it can be), from the rows' log-sum-exp: g (1{v = target} - softmax), in
// `dtype` for the head's products. local_targets: the block's own column of each target, outside
// [0, m) where the target is elsewhere.
at::Tensor logits_gradient(at::Tensor d, const at::Tensor& local_targets, const at::Tensor& lse, const at::Tensor& g,
                           at::ScalarType dtype) {
  if (takes_logit_rows(d)) return logp_gradient(d, local_targets, lse, g, dtype);
  const int64_t m = d.size(1);
  d.sub_(lse.unsqueeze(1)).exp_().mul_(g.neg().unsqueeze(1));
  const at::Tensor inside = local_targets.ge(0).logical_and(local_targets.lt(m));
  d.scatter_add_(1, local_targets.clamp(0, m - 1).unsqueeze(1), (g * inside).unsqueeze(1));
  return d.to(dtype);
}

// Each row's log sum_v softmax[r, v]^2 = logsumexp(2 logits[r]) - 2 lse[r] into out, from whole
// rows of logits [n, V] and their log-sum-exp, in blocks of kSoftmaxChunk (the doubled logits are
// a temporary).
void log_sum_squared_rows(const at::Tensor& logits, const at::Tensor& lse, const at::Tensor& out) {
  const int64_t rows = logits.size(0), step = even_split(kSoftmaxChunk, logits.size(1), rows);
  for (int64_t r = 0; r < rows; r += step) {
    const int64_t n = std::min(step, rows - r);
    out.narrow(0, r, n).copy_(at::logsumexp(2.0 * logits.narrow(0, r, n), -1) - 2.0 * lse.narrow(0, r, n));
  }
}

// log softmax(h @ w^T)[n, targets[n]] into out [n], tile by tile (head_tiles), and each row's
// log-sum-exp into log_norm when it is defined (what backward recomputes the softmax from). Over
// several vocabulary blocks, a row's log-sum-exp is the logaddexp of its blocks' own, and its
// target's logit is read in the block that holds it.
void chunked_logps(const at::Tensor& h, const at::Tensor& w, const at::Tensor& targets, at::Tensor out,
                   at::Tensor log_norm) {
  const int64_t rows = h.size(0), vocab = w.size(0);
  const Tiles tiles = head_tiles(rows, vocab, h.size(1));
  for (int64_t r = 0; r < rows; r += tiles.rows) {
    const int64_t n = std::min(tiles.rows, rows - r);
    const at::Tensor h_rows = h.narrow(0, r, n), targets_rows = targets.narrow(0, r, n), logps = out.narrow(0, r, n);
    const at::Tensor lse = log_norm.defined() ? log_norm.narrow(0, r, n) : at::empty({n}, out.options());
    if (tiles.columns >= vocab) {  // whole rows
      whole_row_logps(chunk_logits(h_rows, w, out.scalar_type()), targets_rows, lse, logps);
      continue;
    }
    at::Tensor target_logits = at::zeros({n}, out.options()), block_lse = at::empty({n}, out.options());
    for (int64_t v = 0; v < vocab; v += tiles.columns) {
      const int64_t m = std::min(tiles.columns, vocab - v);
      const at::Tensor logits = chunk_logits(h_rows, w.narrow(0, v, m), out.scalar_type());
      row_log_norms(logits, v == 0 ? lse : block_lse);
      if (v > 0) lse.copy_(at::logaddexp(lse, block_lse));
      const at::Tensor local_targets = targets_rows - v;
      const at::Tensor inside = local_targets.ge(0).logical_and(local_targets.lt(m));
      const at::Tensor picked = logits.gather(1, local_targets.clamp(0, m - 1).unsqueeze(1)).squeeze(1);
      target_logits = at::where(inside, picked, target_logits);
    }
    logps.copy_(target_logits - lse);
  }
}

// log softmax(hidden @ weight^T)[n, targets[n]], chunk by chunk of rows: only one chunk of logits
// ever exists, in forward and in backward, which recomputes each chunk's product from the kept
// log-sum-exp instead of keeping [N, V] logits (one more product for the head, about a third more
// of its FLOPs, for no [N, V] tensor held from forward to backward).
struct HeadTokenLogps : torch::autograd::Function<HeadTokenLogps> {
  // hidden and weight in their own dtypes (float32 master weights), cast to the matmul dtype here
  // once, so that the gradients return in float32, each rounded once.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t matmul_dtype) {
    const auto dtype = static_cast<at::ScalarType>(matmul_dtype);
    const at::Tensor h = hidden.to(dtype), w = weight.to(dtype);
    const auto options = h.options().dtype(float_type_of(dtype));
    at::Tensor out = at::empty({h.size(0)}, options), log_norm = at::empty({h.size(0)}, options);
    chunked_logps(h, w, targets, out, log_norm);
    ctx->save_for_backward({h, w, targets, log_norm});
    ctx->saved_data["hidden_dtype"] = static_cast<int64_t>(hidden.scalar_type());
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    return out;
  }

  // d logp[n] / d logits[n, v] = 1{v = target} - softmax[n, v], tile by tile (head_tiles);
  // then the head's two products of the tile. The hidden gradient is summed over vocabulary blocks
  // in float32 at least (float64 for float64), the weight's over row tiles in its own dtype.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &w = saved[1], &targets = saved[2], &log_norm = saved[3];
    const auto hidden_dtype = static_cast<at::ScalarType>(ctx->saved_data["hidden_dtype"].toInt());
    const auto weight_dtype = static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    const at::Tensor grad = grad_outputs.at(0).to(log_norm.scalar_type()).contiguous();
    const int64_t rows = h.size(0), vocab = w.size(0);
    const auto sum_dtype = float_type_of(hidden_dtype);
    at::Tensor grad_hidden = at::empty(h.sizes(), h.options().dtype(sum_dtype));
    at::Tensor grad_weight = at::empty(w.sizes(), w.options().dtype(weight_dtype));
    const Tiles tiles = head_tiles(rows, vocab, h.size(1));
    for (int64_t r = 0; r < rows; r += tiles.rows) {
      const int64_t n = std::min(tiles.rows, rows - r);
      const at::Tensor h_rows = h.narrow(0, r, n), targets_rows = targets.narrow(0, r, n);
      const at::Tensor lse = log_norm.narrow(0, r, n), g = grad.narrow(0, r, n);
      for (int64_t v = 0; v < vocab; v += tiles.columns) {
        const int64_t m = std::min(tiles.columns, vocab - v);
        const at::Tensor w_block = w.narrow(0, v, m);
        const at::Tensor local_targets = v == 0 ? targets_rows : targets_rows - v;
        const at::Tensor d = logits_gradient(chunk_logits(h_rows, w_block, log_norm.scalar_type()), local_targets, lse,
                                             g, w.scalar_type());
        add_product(grad_hidden.narrow(0, r, n), d, w_block, v == 0 ? 0.0F : 1.0F);
        add_product(grad_weight.narrow(0, v, m), d.t(), h_rows, r == 0 ? 0.0F : 1.0F);
      }
    }
    return {grad_hidden.to(hidden_dtype), grad_weight, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

namespace {

// Gradients computed ahead (head_logps_with_gradient's), handed to hidden and weight by backward,
// times the gradient that reaches the output: a scalar of value 0 that ties them into the graph.
struct AheadGradients : torch::autograd::Function<AheadGradients> {
  // No grad_weight: the weight's gradient went into a sum of the caller's (weight_gradient_sum).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& /*hidden*/,
                            const at::Tensor& /*weight*/, const at::Tensor& grad_hidden,
                            const c10::optional<at::Tensor>& grad_weight) {
    ctx->saved_data["grad_hidden"] = grad_hidden;
    ctx->saved_data["grad_weight"] = grad_weight ? c10::IValue(*grad_weight) : c10::IValue();
    return at::zeros({}, grad_hidden.options().dtype(at::kFloat));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor& go = grad_outputs.at(0);
    // The usual caller's output gradient is 1: the gradients pass as they are, with no copy.
    const bool one = go.numel() == 1 && go.item<double>() == 1.0;
    const auto scaled = [&](const char* name) {
      const c10::IValue& saved = ctx->saved_data[name];
      if (saved.isNone()) return at::Tensor();
      const at::Tensor t = saved.toTensor();
      return one ? t : t * go.to(t.scalar_type());
    };
    return {scaled("grad_hidden"), scaled("grad_weight"), at::Tensor(), at::Tensor()};
  }
};

// targets as int64, contiguous, checked against hidden, weight and the vocabulary.
at::Tensor checked_targets(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets) {
  if (hidden.dim() != 2 || weight.dim() != 2 || hidden.size(1) != weight.size(1))
    fail("head log-probs: hidden {} and head weight {} do not match", shape_text(hidden.sizes()), shape_text(weight.sizes()));
  if (targets.dim() != 1 || targets.size(0) != hidden.size(0))
    fail("head log-probs: targets {} for {} rows", shape_text(targets.sizes()), hidden.size(0));
  const at::Tensor t = targets.to(at::kLong).contiguous();
  // Checked here, where it costs two reductions, rather than per logit row (the CPU kernels read
  // row[target] unchecked); on CUDA the gather's own device-side check stays.
  if (t.is_cpu() && t.numel() > 0) {
    const int64_t low = t.min().item<int64_t>(), high = t.max().item<int64_t>();
    if (low < 0 || high >= weight.size(0))
      fail("head log-probs: target token {} is outside the head's vocabulary of {}", low < 0 ? low : high, weight.size(0));
  }
  return t;
}

}  // namespace

at::Tensor head_token_logps(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                            at::ScalarType matmul_dtype) {
  const at::Tensor t = checked_targets(hidden, weight, targets);
  const at::ScalarType dtype = matmul_dtype == at::ScalarType::Undefined ? weight.scalar_type() : matmul_dtype;
  if (at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad()))
    return HeadTokenLogps::apply(hidden, weight, t, static_cast<int64_t>(dtype));
  // No gradients: the same chunks, nothing kept.
  at::Tensor out = at::empty({hidden.size(0)}, hidden.options().dtype(float_type_of(dtype)));
  chunked_logps(hidden.to(dtype), weight.to(dtype), t, out, at::Tensor());
  return out;
}

bool takes_weight_gradient_sum(const at::Tensor& weight, const at::Tensor& sum) {
  return sum.defined() && sum.layout() == at::kStrided && sum.sizes() == weight.sizes() &&
         sum.scalar_type() == weight.scalar_type() && sum.device() == weight.device() && sum.is_contiguous();
}

HeadLogpsWithGradient head_logps_with_gradient(const at::Tensor& hidden, const at::Tensor& weight,
                                                const at::Tensor& targets, at::ScalarType matmul_dtype,
                                                const std::vector<int64_t>& chunk_ends,
                                                const TokenGradient& token_gradient,
                                                const at::Tensor& weight_gradient_sum,
                                                const at::Tensor& log_sum_squared) {
  const at::Tensor t = checked_targets(hidden, weight, targets);
  const bool into_sum = weight_gradient_sum.defined();
  if (into_sum && !takes_weight_gradient_sum(weight, weight_gradient_sum))
    fail("head log-probs: the weight's gradient sum must be a contiguous {} tensor of the weight's dtype and device",
         shape_text(weight.sizes()));
  const int64_t rows = hidden.size(0);
  if (chunk_ends.empty() || chunk_ends.back() != rows || !std::is_sorted(chunk_ends.begin(), chunk_ends.end()) ||
      chunk_ends.front() <= 0)
    fail("head log-probs: chunk ends must rise to the {} rows", rows);
  const at::ScalarType dtype = matmul_dtype == at::ScalarType::Undefined ? weight.scalar_type() : matmul_dtype;
  if (log_sum_squared.defined() && (log_sum_squared.dim() != 1 || log_sum_squared.size(0) != rows ||
                                    log_sum_squared.scalar_type() != float_type_of(dtype)))
    fail("head log-probs: the log-sum-squared output must be [{}] of the log-probs' dtype", rows);
  const auto hidden_dtype = hidden.scalar_type(), weight_dtype = weight.scalar_type();
  at::Tensor logps, grad_hidden;
  c10::optional<at::Tensor> grad_weight;  // for the anchor to hand autograd, without the caller's sum
  {
    at::NoGradGuard no_grad;
    const at::Tensor h = hidden.detach().to(dtype), w = weight.detach().to(dtype);
    const auto options = h.options().dtype(float_type_of(dtype));
    logps = at::empty({rows}, options);
    const at::Tensor lse = at::empty({rows}, options);
    grad_hidden = at::empty(h.sizes(), h.options().dtype(float_type_of(hidden_dtype)));
    // The caller's sum, added to; else one of our own, written from the first chunk.
    const at::Tensor weight_sum = into_sum ? weight_gradient_sum : at::empty(w.sizes(), w.options().dtype(weight_dtype));
    int64_t begin = 0;
    for (const int64_t end : chunk_ends) {
      const int64_t n = end - begin;
      const at::Tensor h_rows = h.narrow(0, begin, n), targets_rows = t.narrow(0, begin, n);
      const at::Tensor lse_rows = lse.narrow(0, begin, n), logps_rows = logps.narrow(0, begin, n);
      // The chunk's logits, kept (not recomputed) until the loss has said how much each row weighs.
      const at::Tensor logits = chunk_logits(h_rows, w, float_type_of(dtype));
      whole_row_logps(logits, targets_rows, lse_rows, logps_rows);
      if (log_sum_squared.defined()) log_sum_squared_rows(logits, lse_rows, log_sum_squared.narrow(0, begin, n));
      at::Tensor g;
      {
        at::AutoGradMode with_grad(true);
        g = token_gradient(begin, logps_rows.clone());
      }
      if (!g.defined() || g.dim() != 1 || g.size(0) != n)
        fail("head log-probs: the loss's gradient has {} values for a chunk of {} rows",
             g.defined() ? g.numel() : 0, n);
      const at::Tensor d = logits_gradient(logits, targets_rows, lse_rows, g.detach().to(lse.scalar_type()).contiguous(),
                                           w.scalar_type());
      add_product(grad_hidden.narrow(0, begin, n), d, w, 0.0F);
      add_product(weight_sum, d.t(), h_rows, into_sum || begin > 0 ? 1.0F : 0.0F);
      begin = end;
    }
    if (!into_sum) grad_weight = weight_sum;
  }
  at::Tensor anchor;
  if (hidden.requires_grad() || weight.requires_grad())
    anchor = AheadGradients::apply(hidden, weight, grad_hidden.to(hidden_dtype), grad_weight);
  return {logps, anchor};
}

at::Tensor head_log_sum_squared_probs(const at::Tensor& hidden, const at::Tensor& weight, at::ScalarType matmul_dtype) {
  at::NoGradGuard no_grad;
  const at::ScalarType dtype = matmul_dtype == at::ScalarType::Undefined ? weight.scalar_type() : matmul_dtype;
  const at::Tensor h = hidden.to(dtype), w = weight.to(dtype);
  const int64_t rows = h.size(0);
  at::Tensor out = at::empty({rows}, h.options().dtype(float_type_of(dtype)));
  // Rows of a product chunk, as the log-probs' chunks (of a softmax chunk: 20 rows of GPT-2's
  // vocabulary, the products ran slowly); log_sum_squared_rows bounds its temporaries itself.
  const int64_t step = even_split(product_chunk(h.size(1)), w.size(0), rows);
  for (int64_t r = 0; r < rows; r += step) {
    const int64_t n = std::min(step, rows - r);
    const at::Tensor logits = chunk_logits(h.narrow(0, r, n), w, out.scalar_type());
    const at::Tensor lse = at::empty({n}, out.options());
    row_log_norms(logits, lse);
    log_sum_squared_rows(logits, lse, out.narrow(0, r, n));
  }
  return out;
}

}  // namespace dpo
