// Mixed precision's linear layers on CPUs: both products of forward and backward in bfloat16,
// their results in float32 (kernels' product_in_float32), as one autograd node.
//
// Through libtorch (a cast weight, at::linear in bfloat16, a cast of the output back to float32
// for the elementwise work after it) the same layer costs the bfloat16 rounding of its output and
// of both gradients, three more casts per product, and libtorch's bfloat16 kernel, which on the
// narrow models' inner size of 256 ran at half the speed of oneDNN's float32-result GEMM here.
#include <torch/csrc/autograd/custom_function.h>

#include "dpo/kernels/float_matmul.h"
#include "dpo/model/layers.h"

namespace dpo {
namespace {

struct LinearInFloat32 : torch::autograd::Function<LinearInFloat32> {
  // x [M, K]; weight [N, K] (nn.Linear) or [K, N] (in_out: GPT-2's Conv1D), float32; bias [N] or
  // empty (libtorch 1.13's custom functions take no undefined tensor). The bfloat16 copies of x
  // and the weight are what backward multiplies with.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, bool in_out) {
    const at::Tensor xb = x.to(at::kBFloat16), wb = weight.to(at::kBFloat16);
    const at::Tensor w_kn = in_out ? wb : wb.t();
    const bool has_bias = bias.numel() > 0;
    const at::Tensor y = has_bias ? product_in_float32(xb, w_kn, bias) : product_in_float32(xb, w_kn);
    ctx->save_for_backward({xb, wb});
    ctx->saved_data["in_out"] = in_out;
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["has_bias"] = has_bias;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &xb = saved[0], &wb = saved[1];
    const bool in_out = ctx->saved_data["in_out"].toBool();
    const at::Tensor& grad = grad_outputs.at(0);
    const at::Tensor gb = grad.to(at::kBFloat16);
    at::Tensor grad_x, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0))  // dy [M, N] W^T [N, K]
      grad_x = product_in_float32(gb, in_out ? wb.t() : wb)
                   .to(static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt()));
    if (ctx->needs_input_grad(1))  // [N, K] = dy^T x, or [K, N] = x^T dy
      grad_weight = in_out ? product_in_float32(xb.t(), gb) : product_in_float32(gb.t(), xb);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) grad_bias = grad.to(at::kFloat).sum(0);
    return {grad_x, grad_weight, grad_bias, at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_in_float32(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool in_out) {
  const int64_t in = x.size(-1), out = in_out ? weight.size(1) : weight.size(0);
  auto out_shape = x.sizes().vec();
  out_shape.back() = out;
  const at::Tensor no_bias = at::empty({0}, weight.options());
  return LinearInFloat32::apply(x.reshape({-1, in}), weight, bias.defined() ? bias : no_bias, in_out).view(out_shape);
}

}  // namespace dpo
