#include "dpo/kernels/rotary.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "dpo/kernels/float_lanes.h"

namespace dpo {
namespace {
using namespace lanes;

// Where a [B, T, width] operand's rows are: element (b, t, j) at b * batch + t * time + j. A batch
// stride of 0 shares one [T, width] among all rows of the batch (cos and sin without a layout).
struct Rows {
  int64_t batch, time;
};
Rows rows_of(const at::Tensor& t) { return {t.size(0) == 1 ? 0 : t.stride(0), t.stride(1)}; }

// One head's halves lo = v[:D/2], hi = v[D/2:]. Forward: out_lo = lo c_lo - hi s_lo and
// out_hi = hi c_hi + lo s_hi. Its transpose (backward, from the upstream gradient):
// in_lo = lo c_lo + hi s_hi and in_hi = hi c_hi - lo s_lo. With RoPE's cos and sin the halves of c
// and of s are equal and the transpose is the rotation by minus the angle.
__attribute__((target_clones("avx512f", "avx2", "default"))) void rotate_rows(
    const float* x, Rows x_rows, const float* cos, const float* sin, Rows angle_rows, float* out, int64_t T,
    int64_t heads, int64_t D, bool transpose, int64_t begin, int64_t end) {
  const int64_t half = D / 2, width = heads * D;
  Floats lo{}, hi{}, c_lo{}, c_hi{}, s_lo{}, s_hi{};
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / T, t = r % T;
    const float* in = x + b * x_rows.batch + t * x_rows.time;
    const int64_t angle = b * angle_rows.batch + t * angle_rows.time;
    const float *c = cos + angle, *s = sin + angle;
    float* row = out + r * width;
    for (int64_t j = 0; j < half; j += kLanes) {
      const int64_t count = half - j;
      load(c_lo, c + j, count, 0.0F);
      load(c_hi, c + half + j, count, 0.0F);
      load(s_lo, s + j, count, 0.0F);
      load(s_hi, s + half + j, count, 0.0F);
      if (transpose) std::swap(s_lo, s_hi), s_lo = -s_lo, s_hi = -s_hi;
      for (int64_t h = 0; h < heads; ++h) {
        load(lo, in + h * D + j, count, 0.0F);
        load(hi, in + h * D + half + j, count, 0.0F);
        store(row + h * D + j, lo * c_lo - hi * s_lo, count);
        store(row + h * D + half + j, hi * c_hi + lo * s_hi, count);
      }
    }
  }
}

// out [B, T, width] = the rotation (or its transpose) of x's heads.
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool transpose) {
  const int64_t B = x.size(0), T = x.size(1), D = cos.size(2), heads = x.size(2) / D;
  at::Tensor out = at::empty({B, T, x.size(2)}, x.options());
  const float *in = x.data_ptr<float>(), *c = cos.data_ptr<float>(), *s = sin.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const Rows x_rows = rows_of(x), angle_rows = rows_of(cos);
  at::parallel_for(0, B * T, rows_per_task(x.size(2)), [&](int64_t begin, int64_t end) {
    rotate_rows(in, x_rows, c, s, angle_rows, o, T, heads, D, transpose, begin, end);
  });
  return out;
}

struct Rotary : torch::autograd::Function<Rotary> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rotate(x, cos, sin, /*transpose=*/false);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor g = grad_outputs.at(0).to(at::kFloat).contiguous();
    return {rotate(g, saved[0], saved[1], /*transpose=*/true), at::Tensor(), at::Tensor()};
  }
};

// A [B or 1, T, D] float32 CPU angle table the lanes read: rows of D contiguous values.
bool lane_angles(const at::Tensor& t, const at::Tensor& x) {
  return t.is_cpu() && t.scalar_type() == at::kFloat && t.layout() == at::kStrided && t.dim() == 3 &&
         (t.size(0) == 1 || t.size(0) == x.size(0)) && t.size(1) == x.size(1) && t.stride(2) == 1 && !t.requires_grad();
}

}  // namespace

at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 3 && cos.dim() == 3 && cos.sizes() == sin.sizes() && cos.size(2) % 2 == 0 &&
                  cos.size(2) > 0 && x.size(2) % cos.size(2) == 0,
              "rotary: x [", x.sizes(), "] must be [B, T, heads D] and cos, sin [B or 1, T, D] with D even, got [",
              cos.sizes(), "] and [", sin.sizes(), "]");
  if (x.is_cpu() && x.scalar_type() == at::kFloat && x.layout() == at::kStrided && x.stride(2) == 1 &&
      lane_angles(cos, x) && lane_angles(sin, x))
    return Rotary::apply(x, cos, sin);
  const int64_t D = cos.size(2), half = D / 2;
  const at::Tensor heads = x.reshape({x.size(0), x.size(1), -1, D});
  const at::Tensor rotated = at::cat({-heads.narrow(-1, half, half), heads.narrow(-1, 0, half)}, -1);
  return (heads * cos.unsqueeze(2) + rotated * sin.unsqueeze(2)).flatten(2);
}

}  // namespace dpo
