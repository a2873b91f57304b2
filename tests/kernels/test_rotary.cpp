// kernels/rotary against libtorch's float64 x cos + rotate_half(x) sin per head (transformers'
// apply_rotary_pos_emb): values and the autograd gradient of x, for strided inputs (a slice of the
// stacked projection), angle tables shared by the batch or per row, head sizes with vector tails,
// cos and sin whose halves differ (the transpose in backward), and libtorch's own operations where
// the lanes do not apply.
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "catch2_api.h"

#include "dpo/kernels/rotary.h"

namespace {

at::Tensor reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t D = cos.size(-1), half = D / 2;
  const at::Tensor heads = x.reshape({x.size(0), x.size(1), -1, D});
  const at::Tensor rotated = at::cat({-heads.narrow(-1, half, half), heads.narrow(-1, 0, half)}, -1);
  return (heads * cos.unsqueeze(2) + rotated * sin.unsqueeze(2)).flatten(2);
}

// RoPE's tables for positions [rows, T] (row-wise) : cat(freqs, freqs) of positions x inv_freq.
at::Tensor angles(const at::Tensor& positions, int64_t D) {
  const at::Tensor inv_freq = 1.0 / at::pow(10000.0, at::arange(0, D, 2, at::kDouble) / static_cast<double>(D));
  const at::Tensor freqs = positions.to(at::kDouble).unsqueeze(-1) * inv_freq;
  return at::cat({freqs, freqs}, -1);
}

// Ours on float32 (x a [B, T, width] slice of a wider tensor, `width` of its `columns`) against
// libtorch's float64 on the same values: |error| <= 1e-6 (|x| |cos| + |rotate_half(x)| |sin|), for
// values and, with the upstream in place of x, gradients (|sin| the larger of its two halves).
void check_against_float64(int64_t B, int64_t T, int64_t heads, int64_t D, int64_t columns, const at::Tensor& cos,
                           const at::Tensor& sin) {
  const int64_t width = heads * D;
  const at::Tensor wide = at::randn({B, T, columns});
  const at::Tensor x = wide.narrow(2, 0, width).requires_grad_(true);
  const at::Tensor c32 = cos.to(at::kFloat), s32 = sin.to(at::kFloat);
  const at::Tensor y = dpo::rotary(x, c32, s32);
  const at::Tensor g = at::randn({B, T, width});
  y.backward(g);
  const at::Tensor x64 = x.detach().to(at::kDouble).requires_grad_(true);
  const at::Tensor c64 = c32.to(at::kDouble), s64 = s32.to(at::kDouble);
  const at::Tensor want = reference(x64, c64, s64);
  want.backward(g.to(at::kDouble));
  // The backward pairs each half with the other half's sin: the bound takes the larger of the two.
  const at::Tensor s_either = at::max(s64.abs(), s64.abs().roll(s64.size(2) / 2, 2));
  const auto bound = [&](const at::Tensor& v) {
    const at::Tensor abs = reference(v.abs(), c64.abs(), at::zeros_like(s64)) +
                           reference(v.abs(), at::zeros_like(c64), s_either).abs();
    return abs * 1e-6 + 1e-30;
  };
  CHECK(y.sizes() == want.sizes());
  CHECK(y.is_contiguous());
  CHECK(((y.detach().to(at::kDouble) - want.detach()).abs() <= bound(x64.detach())).all().item<bool>());
  CHECK(((x.grad().to(at::kDouble) - x64.grad()).abs() <= bound(g.to(at::kDouble))).all().item<bool>());
}

}  // namespace

TEST_CASE("rotary equals libtorch's float64 rotate_half embedding and its gradient", "[kernels]") {
  at::manual_seed(21);
  SECTION("queries and keys of a stacked projection, angles shared by the batch ([1, T, D])") {
    const at::Tensor a = angles(at::arange(40, at::kLong).unsqueeze(0), 64);
    check_against_float64(3, 40, 6, 64, 8 * 64, a.cos(), a.sin());
  }
  SECTION("angles per row ([B, T, D]: a layout's restarting positions), head sizes with tails") {
    for (const int64_t D : {2, 32, 34, 66}) {
      INFO("D " << D);
      const at::Tensor positions = at::cat({at::arange(10, at::kLong), at::arange(3, 13, at::kLong)}).view({2, 10});
      const at::Tensor a = angles(positions, D);
      check_against_float64(2, 10, 3, D, 4 * D, a.cos(), a.sin());
    }
  }
  SECTION("tables whose halves differ: backward is the transpose, not the rotation by minus the angle") {
    check_against_float64(2, 5, 2, 20, 40, at::randn({2, 5, 20}, at::kDouble), at::randn({2, 5, 20}, at::kDouble));
  }
}

TEST_CASE("rotary off the lanes and with bad shapes", "[kernels]") {
  at::manual_seed(22);
  const at::Tensor a = angles(at::arange(6, at::kLong).unsqueeze(0), 16);
  SECTION("bfloat16 x with float32 tables: libtorch's operations, promoted to float32") {
    const at::Tensor x = at::randn({1, 6, 32}).to(at::kBFloat16);
    const at::Tensor got = dpo::rotary(x, a.cos().to(at::kFloat), a.sin().to(at::kFloat));
    CHECK(got.scalar_type() == at::kFloat);
    CHECK(at::allclose(got, reference(x.to(at::kFloat), a.cos().to(at::kFloat), a.sin().to(at::kFloat)), 1e-6, 1e-6));
  }
  SECTION("float64: libtorch's operations, equal to the reference") {
    const at::Tensor x = at::randn({1, 6, 32}, at::kDouble);
    CHECK(at::equal(dpo::rotary(x, a.cos(), a.sin()), reference(x, a.cos(), a.sin())));
  }
  const at::Tensor x = at::randn({1, 6, 32});
  CHECK_THROWS_WITH(dpo::rotary(x, at::ones({1, 6, 15}), at::ones({1, 6, 15})), Catch::Contains("rotary: x"));
  CHECK_THROWS_WITH(dpo::rotary(x, at::ones({1, 6, 12}), at::ones({1, 6, 12})), Catch::Contains("D even"));
}
