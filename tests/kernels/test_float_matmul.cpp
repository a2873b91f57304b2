// Float32 products re-routed to oneDNN (kernels/float_matmul.h): every replaced kernel against a
// float64 product of the same operands, over the layouts callers hand it (transposed views,
// row strides, broadcast biases, batch slices), and the edge cases left to libtorch.
#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>
#include <limits>
#include <tuple>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "catch2_api.h"

#include "dpo/kernels/float_matmul.h"

namespace {

// Largest |x - y| relative to the largest |y| (float32 products of K terms: ~K * 2^-24).
double relative_error(const at::Tensor& x, const at::Tensor& y) {
  const double scale = y.abs().max().item<double>();
  return (x.to(at::kDouble) - y).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

at::Tensor randn(at::IntArrayRef sizes) { return at::randn(sizes, at::kFloat); }

}  // namespace

TEST_CASE("float32 products: each replaced kernel equals a float64 product", "[runtime]") {
  const std::string route = dpo::route_float_matmuls();
  INFO(route);
  at::manual_seed(7);
  const double tol = 1e-5;
  for (const auto& [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 5, 7}, {64, 33, 17}, {257, 130, 65}}) {
    const at::Tensor a = randn({M, K}), b = randn({K, N}), bias = randn({N}), c = randn({M, N});
    const at::Tensor a64 = a.to(at::kDouble), b64 = b.to(at::kDouble);
    const at::Tensor ab = at::mm(a64, b64);
    CHECK(relative_error(at::mm(a, b), ab) < tol);
    // Transposed views and a row stride larger than the row.
    const at::Tensor at_view = randn({K, M}).t(), wide = randn({M, K + 9}).narrow(1, 3, K);
    CHECK(relative_error(at::mm(at_view, b), at::mm(at_view.to(at::kDouble), b64)) < tol);
    CHECK(relative_error(at::mm(wide, b.t().contiguous().t()), at::mm(wide.to(at::kDouble), b64)) < tol);
    // A layout GEMM cannot read (every second column) is copied first.
    const at::Tensor strided = randn({M, 2 * K}).slice(1, 0, 2 * K, 2);
    CHECK(relative_error(at::mm(strided, b), at::mm(strided.to(at::kDouble), b64)) < tol);
    // addmm: broadcast bias, beta and alpha; beta 0 ignores a NaN input.
    CHECK(relative_error(at::addmm(bias, a, b), ab + bias.to(at::kDouble)) < tol);
    CHECK(relative_error(at::addmm(c, a, b, 0.5, -2.0), 0.5 * c.to(at::kDouble) - 2.0 * ab) < tol);
    const at::Tensor nan = at::full({M, N}, std::numeric_limits<float>::quiet_NaN());
    CHECK(relative_error(at::addmm(nan, a, b, 0.0, 1.0), ab) < tol);
    // addmm_ in place (the head's gradient accumulation) and mm's out= form (the MFU gauge).
    at::Tensor acc = c.clone();
    acc.addmm_(a, b, 1.0, 3.0);
    CHECK(relative_error(acc, c.to(at::kDouble) + 3.0 * ab) < tol);
    at::Tensor out = at::empty({0}, at::kFloat);
    at::mm_out(out, a, b);
    CHECK(out.sizes() == at::IntArrayRef{M, N});
    CHECK(relative_error(out, ab) < tol);
    // Batched, with batch slices that are transposed views.
    const at::Tensor x = randn({4, M, K}), y = randn({4, N, K}).transpose(1, 2), z = randn({4, M, N});
    const at::Tensor xy = at::bmm(x.to(at::kDouble), y.to(at::kDouble));
    CHECK(relative_error(at::bmm(x, y), xy) < tol);
    CHECK(relative_error(at::baddbmm(z, x, y, 1.0, 0.25), z.to(at::kDouble) + 0.25 * xy) < tol);
    CHECK(relative_error(at::baddbmm(randn({M, N}), x, y, 0.0, 1.0), xy) < tol);  // broadcast self, beta 0
  }
}

TEST_CASE("float32 products: gradients, empty shapes and other dtypes behave as libtorch's", "[runtime]") {
  dpo::route_float_matmuls();
  at::manual_seed(8);
  // Autograd's backward formulas reach the same kernels: gradients against float64.
  const at::Tensor a = randn({6, 5}).requires_grad_(), b = randn({5, 4}).requires_grad_();
  const at::Tensor a64 = a.detach().to(at::kDouble).requires_grad_(), b64 = b.detach().to(at::kDouble).requires_grad_();
  at::mm(a, b).pow(2).sum().backward();
  at::mm(a64, b64).pow(2).sum().backward();
  CHECK(relative_error(a.grad(), a64.grad()) < 1e-5);
  CHECK(relative_error(b.grad(), b64.grad()) < 1e-5);
  // An empty inner dimension: zeros (mm) or beta * self (addmm), as libtorch defines them.
  CHECK(at::mm(randn({3, 0}), randn({0, 2})).equal(at::zeros({3, 2})));
  const at::Tensor c = randn({3, 2});
  CHECK(at::allclose(at::addmm(c, randn({3, 0}), randn({0, 2}), 2.0, 1.0), 2.0 * c));
  CHECK(at::mm(randn({0, 4}), randn({4, 2})).sizes() == at::IntArrayRef{0, 2});
  // Other dtypes keep libtorch's kernels and their own dtype.
  const at::Tensor d = at::randn({5, 3}, at::kDouble);
  CHECK(at::mm(d, d.t()).scalar_type() == at::kDouble);
  const at::Tensor h = randn({8, 8}).to(at::kBFloat16);
  CHECK(at::mm(h, h).scalar_type() == at::kBFloat16);
  // Mismatched shapes still get libtorch's error.
  CHECK_THROWS(at::mm(randn({2, 3}), randn({4, 2})));
}

TEST_CASE("float32 products run on oneDNN where libtorch links it", "[runtime]") {
  const std::string route = dpo::route_float_matmuls();
  // Debian's libtorch links oneDNN (libdnnl): where its GEMM is loaded, the route must be taken.
  const bool loaded = dlsym(RTLD_DEFAULT, "dnnl_sgemm") != nullptr;
  if (loaded && std::getenv("DPO_FLOAT_MATMUL") == nullptr) CHECK_THAT(route, Catch::StartsWith("oneDNN"));
  if (!loaded) CHECK_THAT(route, Catch::StartsWith("libtorch's BLAS"));
  CHECK(dpo::route_float_matmuls() == route);  // installed once
}

TEST_CASE("bfloat16 products with float32 results equal a float64 product of the same bfloat16 values", "[runtime]") {
  const bool loaded = dpo::bfloat16_products_in_float32();
  INFO("oneDNN's bfloat16 GEMM loaded: " << loaded);
  at::manual_seed(9);
  // Without oneDNN's GEMM (DPO_BF16_MATMUL=libtorch) libtorch's bfloat16 product and a cast: its
  // results are rounded to bfloat16 (libtorch 1.13's CPU kernel: up to 1.4e-2 of the largest value).
  const double tol = loaded ? 1e-5 : 5e-2;
  for (const auto& [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 5, 7}, {64, 256, 17}, {257, 130, 65}}) {
    INFO(M << " x " << K << " x " << N);
    const at::Tensor a = randn({M, K}).to(at::kBFloat16), b = randn({K, N}).to(at::kBFloat16);
    const at::Tensor ab = at::mm(a.to(at::kDouble), b.to(at::kDouble));
    const at::Tensor product = dpo::product_in_float32(a, b);
    CHECK(product.scalar_type() == at::kFloat);
    CHECK(relative_error(product, ab) < tol);
    // Transposed views, as the layers' backward hands them.
    const at::Tensor at_ = a.t().contiguous().t(), bt = b.t().contiguous().t();
    CHECK(relative_error(dpo::product_in_float32(at_, bt), ab) < tol);
    // Accumulated into rows of a wider float32 tensor (beta 1), and overwritten (beta 0).
    at::Tensor wide = randn({M, N + 3});
    at::Tensor out = wide.narrow(1, 1, N);
    const at::Tensor before = out.to(at::kDouble);
    dpo::add_product_in_float32(out, a, b, 1.0F);
    CHECK(relative_error(out, ab + before) < tol);
    dpo::add_product_in_float32(out, a, bt, 0.0F);
    CHECK(relative_error(out, ab) < tol);
  }
  // Other dtypes take libtorch's product, cast to float32.
  const at::Tensor a = randn({4, 3}), b = randn({3, 2});
  CHECK(at::allclose(dpo::product_in_float32(a, b), at::mm(a, b)));
  at::Tensor wrong = at::zeros({4, 3});
  CHECK_THROWS(dpo::add_product_in_float32(wrong, a, b, 0.0F));
}

TEST_CASE("raw-pointer GEMMs (tiled kernels' products): transposes, alpha and beta, in float32 and bfloat16", "[runtime]") {
  at::manual_seed(10);
  const int64_t M = 9, K = 40, N = 6;
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const bool loaded = dtype == at::kFloat ? dpo::float32_gemm_loaded() : dpo::bfloat16_products_in_float32();
    if (!loaded) continue;  // gemm_rows is only called where loaded
    INFO(dtype);
    // A stored [K, M] and read transposed; B [N, K] read transposed, as attention reads keys.
    const at::Tensor a = randn({K, M}).to(dtype), b = randn({N, K}).to(dtype);
    const at::Tensor ab = at::mm(a.to(at::kDouble).t(), b.to(at::kDouble).t());
    at::Tensor out = randn({M, N});
    const at::Tensor before = out.to(at::kDouble);
    auto product = [&](float alpha, float beta) {
      if (dtype == at::kFloat)
        dpo::gemm_rows('T', 'T', M, N, K, alpha, a.data_ptr<float>(), M, b.data_ptr<float>(), K, beta, out.data_ptr<float>(), N);
      else
        dpo::gemm_rows('T', 'T', M, N, K, alpha, a.data_ptr<at::BFloat16>(), M, b.data_ptr<at::BFloat16>(), K, beta,
                       out.data_ptr<float>(), N);
    };
    product(0.5F, 1.0F);
    CHECK(relative_error(out, 0.5 * ab + before) < 1e-5);
    // beta 0 ignores what out held, NaN included.
    out.fill_(std::numeric_limits<float>::quiet_NaN());
    product(2.0F, 0.0F);
    CHECK(relative_error(out, 2.0 * ab) < 1e-5);
    // Every pairing of alpha (1, a power of two, any other) with beta (0, 1, any other): the
    // bfloat16 GEMM applies those other than 1 and 0/1 itself, around oneDNN's product.
    for (const float alpha : {1.0F, 0.125F, -3.0F, 0.3F}) {
      for (const float beta : {0.0F, 1.0F, 0.5F, 2.0F}) {
        INFO("alpha " << alpha << ", beta " << beta);
        out = randn({M, N});
        const at::Tensor held = out.to(at::kDouble);
        product(alpha, beta);
        CHECK(relative_error(out, alpha * ab + beta * held) < 1e-5);
      }
    }
  }
}

TEST_CASE("raw-pointer bfloat16 GEMMs with alpha and beta leave columns past N alone", "[runtime]") {
  if (!dpo::bfloat16_products_in_float32()) return;
  at::manual_seed(12);
  const int64_t M = 5, K = 16, N = 7, ldc = 11;
  const at::Tensor a = randn({M, K}).to(at::kBFloat16), b = randn({K, N}).to(at::kBFloat16);
  const at::Tensor ab = at::mm(a.to(at::kDouble), b.to(at::kDouble));
  at::Tensor wide = randn({M, ldc});
  const at::Tensor before = wide.clone();
  dpo::gemm_rows('N', 'N', M, N, K, 0.25F, a.data_ptr<at::BFloat16>(), K, b.data_ptr<at::BFloat16>(), N, 3.0F,
                 wide.data_ptr<float>(), ldc);
  CHECK(relative_error(wide.narrow(1, 0, N), 0.25 * ab + 3.0 * before.narrow(1, 0, N).to(at::kDouble)) < 1e-5);
  CHECK(at::equal(wide.narrow(1, N, ldc - N), before.narrow(1, N, ldc - N)));
}

namespace {
// Whether this CPU reports AMX's bfloat16 tiles (Linux's flag in /proc/cpuinfo).
bool cpu_has_amx_bf16() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line))
    if (line.rfind("flags", 0) == 0) return line.find(" amx_bf16") != std::string::npos;
  return false;
}
}  // namespace

TEST_CASE("whole bfloat16 products on oneDNN's AMX matmul primitive equal a float64 product, rows past a multiple of 64 included", "[runtime]") {
  if (!dpo::bfloat16_products_in_float32()) return;
  // Where the primitive must be taken: an AMX CPU, oneDNN 2.x's primitive interface loaded (as
  // with Debian 12's libtorch), and no DPO_BF16_MATMUL choice (the second-kernel pass sets one).
  const bool expected = cpu_has_amx_bf16() && dlsym(RTLD_DEFAULT, "dnnl_matmul_desc_init") != nullptr &&
                        std::getenv("DPO_BF16_MATMUL") == nullptr;
  INFO("primitive expected: " << expected);
  at::manual_seed(13);
  // {M, K, N, taken}: multiples of 64 rows and not, the largest inner size it takes and one more
  // (the GEMM function alone), few rows (none of them taken).
  for (const auto& [M, K, N, taken] : {std::tuple<int64_t, int64_t, int64_t, bool>{64, 256, 64, true},
                                       {130, 768, 300, true}, {200, 1024, 16, true}, {128, 1025, 64, false},
                                       {63, 256, 64, false}}) {
    INFO(M << " x " << K << " x " << N);
    const at::Tensor a = randn({M, K}).to(at::kBFloat16), b = randn({K, N}).to(at::kBFloat16);
    const at::Tensor ab = at::mm(a.to(at::kDouble), b.to(at::kDouble));
    const int64_t before_count = dpo::bfloat16_primitive_products();
    CHECK(relative_error(dpo::product_in_float32(a, b), ab) < 1e-5);
    // With a bias on every row (the primitive adds it itself; the rows it leaves start from it).
    const at::Tensor bias = randn({N});
    CHECK(relative_error(dpo::product_in_float32(a, b, bias), ab + bias.to(at::kDouble)) < 1e-5);
    // Transposed operands (the layers' backward), accumulated into a dense float32 tensor.
    const at::Tensor at_ = a.t().contiguous().t(), bt = b.t().contiguous().t();
    at::Tensor dense = randn({M, N});
    const at::Tensor held = dense.to(at::kDouble);
    dpo::add_product_in_float32(dense, at_, bt, 1.0F);
    CHECK(relative_error(dense, ab + held) < 1e-5);
    // Rows of a wider tensor: oneDNN's AMX kernel writes dense rows only, so these stay on the
    // GEMM function; what out held is ignored (NaN), the columns around it are left alone.
    at::Tensor wide = randn({M, N + 5});
    at::Tensor out = wide.narrow(1, 2, N);
    const at::Tensor left = wide.narrow(1, 0, 2).clone(), right = wide.narrow(1, N + 2, 3).clone();
    out.fill_(std::numeric_limits<float>::quiet_NaN());
    dpo::add_product_in_float32(out, at_, b, 0.0F);
    CHECK(relative_error(out, ab) < 1e-5);
    CHECK(at::equal(wide.narrow(1, 0, 2), left));
    CHECK(at::equal(wide.narrow(1, N + 2, 3), right));
    // Taken for the plain product and the one with a bias at least (whether oneDNN's AMX kernel
    // takes the transposed and accumulated one depends on its strides: it declined 128 of 130
    // columns read transposed), or for none.
    const int64_t count = dpo::bfloat16_primitive_products() - before_count;
    CHECK(count <= 3);
    CHECK((count == 0 || count >= 2));
    CHECK((count > 0) == (expected && taken));
  }
  if (expected) CHECK_THAT(dpo::bfloat16_primitive_implementation(), Catch::Contains("amx"));
}
