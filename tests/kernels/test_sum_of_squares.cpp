// kernels/sum_of_squares against float64 sums, over block edges, thread counts and float32's range.
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "catch2_api.h"

#include "dpo/kernels/sum_of_squares.h"

TEST_CASE("sum_of_squares equals the float64 sum of squares over block edges", "[kernels]") {
  at::manual_seed(5);
  // Empty, shorter than a vector, a tail after the vector loop, one block of 65536 exactly, and
  // several blocks with a remainder.
  for (const int64_t n : {0, 1, 31, 33, 65536, 3 * 65536 + 17}) {
    INFO(n << " elements");
    const at::Tensor t = at::randn({n}) * 3.0;
    const double expected = t.to(at::kDouble).pow(2).sum().item<double>();
    CHECK(dpo::sum_of_squares(t) == Approx(expected).epsilon(1e-13).margin(0.0));
  }
}

TEST_CASE("sum_of_squares does not depend on the number of threads", "[kernels]") {
  at::manual_seed(6);
  const at::Tensor t = at::randn({5 * 65536 + 3});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const double one = dpo::sum_of_squares(t);
  at::set_num_threads(std::max(2, threads));
  const double several = dpo::sum_of_squares(t);
  at::set_num_threads(threads);
  CHECK(one == several);  // bit for bit: the blocks' sums are added in order
}

TEST_CASE("sum_of_squares holds squares beyond float32's range and passes NaN and infinity on", "[kernels]") {
  // 1e20^2 = 1e40 overflows float32, not float64.
  const at::Tensor big = at::full({1000}, 1e20, at::kFloat);
  const double e = static_cast<double>(1e20F);
  CHECK(dpo::sum_of_squares(big) == Approx(1000.0 * e * e).epsilon(1e-14));
  at::Tensor nan = at::ones({70000});
  nan[69999] = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(dpo::sum_of_squares(nan)));
  at::Tensor inf = at::ones({40});
  inf[3] = -std::numeric_limits<float>::infinity();
  CHECK(std::isinf(dpo::sum_of_squares(inf)));
}

TEST_CASE("sum_of_squares takes only contiguous float32 CPU tensors", "[kernels]") {
  const at::Tensor m = at::ones({4, 6});
  CHECK(dpo::takes_sum_of_squares(m));
  CHECK_FALSE(dpo::takes_sum_of_squares(m.t()));
  CHECK_FALSE(dpo::takes_sum_of_squares(m.to(at::kDouble)));
  CHECK_FALSE(dpo::takes_sum_of_squares(m.to(at::kBFloat16)));
  CHECK_THROWS_WITH(dpo::sum_of_squares(m.t()), Catch::Contains("contiguous float32 CPU tensor"));
}
