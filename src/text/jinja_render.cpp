// Rendering the syntax tree: scopes (a for loop body and a macro body are their own scope, as in
// Jinja2, which is why templates use namespace() to carry values out of loops), loop.*, macros and
// call blocks, and the operators.
#include <cmath>
#include <unordered_map>

#include <fmt/format.h>

#include "dpo/error.h"
#include "dpo/text/jinja.h"
#include "jinja_ast.h"

namespace dpo::jinja {
namespace {

using Frame = std::unordered_map<std::string, Value>;
// Macro calls nested deeper than this (a macro calling itself without end) are refused before the
// stack runs out, as Python's recursion limit stops Jinja2.
constexpr int kMaxCallDepth = 100;
// 'x' * n past this is refused: no template builds such text, and a typo must not exhaust memory.
constexpr uint64_t kMaxRepeatedBytes = uint64_t{1} << 30;
enum class Flow { Normal, Break, Continue };

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  const bool both_int = (a.is(Value::Kind::Int) || a.is(Value::Kind::Bool)) && (b.is(Value::Kind::Int) || b.is(Value::Kind::Bool));
  if (op == "+" && a.is(Value::Kind::String) && b.is(Value::Kind::String)) return Value::from(a.text + b.text);
  if (op == "+" && a.is(Value::Kind::Array) && b.is(Value::Kind::Array)) {
    Array items = *a.array;
    items.insert(items.end(), b.array->begin(), b.array->end());
    return Value::list(std::move(items));
  }
  if (op == "*" && a.is(Value::Kind::String) && b.is(Value::Kind::Int)) {
    if (b.integer > 0 && a.text.size() * static_cast<uint64_t>(b.integer) > kMaxRepeatedBytes)
      throw TemplateFault(fmt::format("string repetition past {} bytes", kMaxRepeatedBytes));
    std::string out;
    for (int64_t i = 0; i < b.integer; ++i) out += a.text;
    return Value::from(out);
  }
  if (!a.is_number() || !b.is_number())
    throw TemplateFault(fmt::format("unsupported operand types for {}: {} and {}", op, type_name(a), type_name(b)));
  const int64_t x = a.is(Value::Kind::Bool) ? a.boolean : a.integer, y = b.is(Value::Kind::Bool) ? b.boolean : b.integer;
  const double p = a.as_double(), q = b.as_double();
  if ((op == "/" || op == "//" || op == "%") && q == 0) throw TemplateFault("division by zero");
  int64_t exact = 0;  // Python's ints do not overflow; ours are refused where they would
  if (both_int && (op == "+" || op == "-" || op == "*")) {
    const bool overflow = op == "+" ? __builtin_add_overflow(x, y, &exact)
                          : op == "-" ? __builtin_sub_overflow(x, y, &exact) : __builtin_mul_overflow(x, y, &exact);
    if (overflow) throw TemplateFault(fmt::format("integer overflow in {} {} {}", x, op, y));
    return Value::from(exact);
  }
  if (op == "+") return Value::from(p + q);
  if (op == "-") return Value::from(p - q);
  if (op == "*") return Value::from(p * q);
  if (op == "/") return Value::from(p / q);
  if (op == "//") {
    if (both_int) return Value::from(static_cast<int64_t>(std::floor(static_cast<double>(x) / static_cast<double>(y))));
    return Value::from(std::floor(p / q));
  }
  if (op == "%") {
    if (both_int) return Value::from(((x % y) + y) % y);
    return Value::from(p - q * std::floor(p / q));
  }
  if (both_int && y >= 0) {
    const double power = std::pow(p, q);
    if (std::fabs(power) >= 9.2e18) throw TemplateFault(fmt::format("integer overflow in {} ** {}", x, y));
    return Value::from(static_cast<int64_t>(std::llround(power)));
  }
  return Value::from(std::pow(p, q));
}

Value binary_operation(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") return Value::from(to_text(a) + to_text(b));
  if (op == "==") return Value::from(equals(a, b));
  if (op == "!=") return Value::from(!equals(a, b));
  if (op == "<") return Value::from(less_than(a, b));
  if (op == ">") return Value::from(less_than(b, a));
  if (op == "<=") return Value::from(!less_than(b, a));
  if (op == ">=") return Value::from(!less_than(a, b));
  if (op == "in") return Value::from(contains(b, a));
  if (op == "not in") return Value::from(!contains(b, a));
  return arithmetic(op, a, b);
}

Value loop_object(size_t index, const Array& items, const std::shared_ptr<Function>& cycle) {
  Value loop = Value::dict();
  const auto n = static_cast<int64_t>(items.size());
  const auto i = static_cast<int64_t>(index);
  auto& o = *loop.object;
  o.set("index", Value::from(i + 1));
  o.set("index0", Value::from(i));
  o.set("revindex", Value::from(n - i));
  o.set("revindex0", Value::from(n - i - 1));
  o.set("first", Value::from(i == 0));
  o.set("last", Value::from(i == n - 1));
  o.set("length", Value::from(n));
  o.set("previtem", i > 0 ? items[index - 1] : Value::undefined("loop.previtem"));
  o.set("nextitem", i + 1 < n ? items[index + 1] : Value::undefined("loop.nextitem"));
  Value cycler;
  cycler.kind = Value::Kind::Function;
  cycler.function = cycle;
  o.set("cycle", cycler);
  o.set("depth", Value::from(int64_t{1}));
  o.set("depth0", Value::from(int64_t{0}));
  return loop;
}

class Renderer {
 public:
  explicit Renderer(std::vector<std::shared_ptr<Frame>> frames, int depth = 0) : frames_(std::move(frames)), depth_(depth) {}

  Flow run(const Body& body, std::string& out) {
    for (const NodePtr& node : body) {
      line_ = node->line;
      Flow flow;
      try {
        flow = run_node(*node, out);
      } catch (const TemplateFaultAt&) {
        throw;
      } catch (const std::exception& fault) {
        throw TemplateFaultAt(line_, fault.what());
      }
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

 private:
  std::vector<std::shared_ptr<Frame>> frames_;  // innermost last; frames_[0] holds the context
  int depth_ = 0;
  int line_ = 0;

  Value lookup(const std::string& name) const {
    for (auto frame = frames_.rbegin(); frame != frames_.rend(); ++frame) {
      auto found = (*frame)->find(name);
      if (found != (*frame)->end()) return found->second;
    }
    return global_function(name);
  }

  void assign(const std::string& name, Value value) { (*frames_.back())[name] = std::move(value); }

  Flow run_node(const Node& node, std::string& out);
  Flow run_for(const Node& node, std::string& out);
  void run_set(const Node& node);
  Value make_macro(const Node& node);
  void run_call_block(const Node& node, std::string& out);
  Value eval(const Expr& expr);
  Value eval_call(const Expr& expr, Value extra_caller = {});
  CallArgs eval_arguments(const Expr& expr, size_t first);
  void bind_targets(Frame& frame, const std::vector<std::string>& targets, const Value& item) const;
};

Flow Renderer::run_node(const Node& node, std::string& out) {
  switch (node.kind) {
    case Node::Kind::Text: out += node.text; return Flow::Normal;
    case Node::Kind::Output: out += to_text(eval(*node.exprs[0])); return Flow::Normal;
    case Node::Kind::If:
      for (size_t i = 0; i < node.bodies.size(); ++i)
        if (i >= node.exprs.size() || eval(*node.exprs[i]).truthy()) return run(node.bodies[i], out);
      return Flow::Normal;
    case Node::Kind::For: return run_for(node, out);
    case Node::Kind::Set: run_set(node); return Flow::Normal;
    case Node::Kind::SetBlock: {
      std::string captured;
      run(node.bodies[0], captured);
      assign(node.targets[0], Value::from(captured));
      return Flow::Normal;
    }
    case Node::Kind::Macro: assign(node.text, make_macro(node)); return Flow::Normal;
    case Node::Kind::CallBlock: run_call_block(node, out); return Flow::Normal;
    case Node::Kind::FilterBlock: {
      std::string captured;
      run(node.bodies[0], captured);
      const Expr& filter = *node.exprs[0];
      out += to_text(apply_filter(filter.name, Value::from(captured), eval_arguments(filter, 1)));
      return Flow::Normal;
    }
    case Node::Kind::Break: return Flow::Break;
    case Node::Kind::Continue: return Flow::Continue;
  }
  return Flow::Normal;
}

void Renderer::bind_targets(Frame& frame, const std::vector<std::string>& targets, const Value& item) const {
  if (targets.size() == 1) {
    frame[targets[0]] = item;
    return;
  }
  const Array parts = iteration_items(item);
  if (parts.size() != targets.size())
    throw TemplateFault(fmt::format("cannot unpack {} values into {} names", parts.size(), targets.size()));
  for (size_t i = 0; i < targets.size(); ++i) frame[targets[i]] = parts[i];
}

Flow Renderer::run_for(const Node& node, std::string& out) {
  const Array all = iteration_items(eval(*node.exprs[0]));
  Array items;
  for (const Value& item : all) {  // {% for x in xs if cond %}: loop.* counts only the kept items
    if (node.exprs.size() < 2) {
      items.push_back(item);
      continue;
    }
    frames_.push_back(std::make_shared<Frame>());
    bind_targets(*frames_.back(), node.targets, item);
    const bool keep = eval(*node.exprs[1]).truthy();
    frames_.pop_back();
    if (keep) items.push_back(item);
  }
  if (items.empty()) return node.bodies.size() > 1 ? run(node.bodies[1], out) : Flow::Normal;
  auto index = std::make_shared<size_t>(0);
  auto cycle = std::make_shared<Function>([index](const CallArgs& args) {
    if (args.positional.empty()) throw TemplateFault("loop.cycle needs at least one value");
    return args.positional[*index % args.positional.size()];
  });
  for (size_t i = 0; i < items.size(); ++i) {
    *index = i;
    auto frame = std::make_shared<Frame>();
    bind_targets(*frame, node.targets, items[i]);
    (*frame)["loop"] = loop_object(i, items, cycle);
    frames_.push_back(frame);
    const Flow flow = run(node.bodies[0], out);
    frames_.pop_back();
    if (flow == Flow::Break) break;
  }
  return Flow::Normal;
}

void Renderer::run_set(const Node& node) {
  Value value = eval(*node.exprs[0]);
  if (node.attribute) {
    Value target = lookup(node.targets[0]);
    if (!target.is(Value::Kind::Object) || !target.object->is_namespace)
      throw TemplateFault(fmt::format("cannot assign attribute '{}' of '{}': not a namespace()", node.targets[1], node.targets[0]));
    target.object->set(node.targets[1], std::move(value));
    return;
  }
  if (node.targets.size() == 1) return assign(node.targets[0], std::move(value));
  Frame unpacked;
  bind_targets(unpacked, node.targets, value);
  for (auto& [name, item] : unpacked) assign(name, std::move(item));
}

Value Renderer::make_macro(const Node& node) {
  // The macro sees the template's top-level variables and its own parameters (and `caller`).
  std::shared_ptr<Frame> globals = frames_.front();
  auto self = std::shared_ptr<const Node>(std::shared_ptr<const Node>{}, &node);
  std::vector<Value> defaults;
  for (const ExprPtr& d : node.defaults) defaults.push_back(d ? eval(*d) : Value::undefined());
  return Value::callable([globals, self, defaults](const CallArgs& args) {
    auto locals = std::make_shared<Frame>();
    if (args.positional.size() > self->params.size())
      throw TemplateFault(fmt::format("macro '{}' takes {} arguments, {} given", self->text, self->params.size(), args.positional.size()));
    for (size_t i = 0; i < self->params.size(); ++i) {
      const Value* given = args.get(i, self->params[i]);
      (*locals)[self->params[i]] = given ? *given : defaults[i];
    }
    for (const auto& [name, value] : args.named)
      if (name == "caller") (*locals)["caller"] = value;
    if (args.depth > kMaxCallDepth) throw TemplateFault(fmt::format("macro '{}': calls nested deeper than {}", self->text, kMaxCallDepth));
    std::string out;
    Renderer(std::vector<std::shared_ptr<Frame>>{globals, locals}, args.depth).run(self->bodies[0], out);
    return Value::from(out);
  });
}

void Renderer::run_call_block(const Node& node, std::string& out) {
  const Body* body = &node.bodies[0];
  Value caller = Value::callable([this, body](const CallArgs&) {
    std::string captured;
    run(*body, captured);
    return Value::from(captured);
  });
  out += to_text(eval_call(*node.exprs[0], caller));
}

CallArgs Renderer::eval_arguments(const Expr& expr, size_t first) {
  CallArgs args;
  for (size_t i = first; i < expr.operands.size(); ++i) {
    Value value = eval(*expr.operands[i]);
    if (expr.arg_names[i].empty()) args.positional.push_back(std::move(value));
    else args.named.emplace_back(expr.arg_names[i], std::move(value));
  }
  return args;
}

Value Renderer::eval_call(const Expr& expr, Value extra_caller) {
  const Value callee = eval(*expr.operands[0]);
  CallArgs args = eval_arguments(expr, 1);
  if (!extra_caller.is(Value::Kind::Undefined)) args.named.emplace_back("caller", extra_caller);
  args.depth = depth_ + 1;
  line_ = expr.line;
  if (!callee.is(Value::Kind::Function)) {
    const Expr& target = *expr.operands[0];
    const std::string name = target.kind == Expr::Kind::Name || target.kind == Expr::Kind::Attribute ? target.name : "value";
    throw TemplateFault(callee.is(Value::Kind::Undefined) ? fmt::format("'{}' is undefined", name)
                                                          : fmt::format("'{}' is not callable", name));
  }
  return (*callee.function)(args);
}

Value Renderer::eval(const Expr& expr) {
  line_ = expr.line;
  switch (expr.kind) {
    case Expr::Kind::Literal: return expr.literal;
    case Expr::Kind::Name: {
      Value value = lookup(expr.name);
      if (value.is(Value::Kind::Undefined)) value.undefined_name = expr.name;
      return value;
    }
    case Expr::Kind::Attribute:
    case Expr::Kind::Item:
    case Expr::Kind::Slice: {
      const Value subject = eval(*expr.operands[0]);
      line_ = expr.line;
      if (subject.is(Value::Kind::Undefined))
        throw TemplateFault(fmt::format("'{}' is undefined", subject.undefined_name.empty() ? "value" : subject.undefined_name));
      if (expr.kind == Expr::Kind::Attribute) {
        Value value = get_attribute(subject, expr.name);
        if (value.is(Value::Kind::Undefined)) value.undefined_name = expr.name;
        return value;
      }
      auto part = [&](size_t i) { return expr.operands[i] ? eval(*expr.operands[i]) : Value::none(); };
      if (expr.kind == Expr::Kind::Item) return get_item(subject, eval(*expr.operands[1]));
      return slice_of(subject, part(1), part(2), part(3));
    }
    case Expr::Kind::Call: return eval_call(expr);
    case Expr::Kind::Filter: {
      const Value subject = eval(*expr.operands[0]);
      CallArgs args = eval_arguments(expr, 1);
      line_ = expr.line;
      return apply_filter(expr.name, subject, args);
    }
    case Expr::Kind::Test: {
      const Value subject = eval(*expr.operands[0]);
      CallArgs args = eval_arguments(expr, 1);
      line_ = expr.line;
      return Value::from(apply_test(expr.name, subject, args) != expr.negated);
    }
    case Expr::Kind::Unary: {
      const Value operand = eval(*expr.operands[0]);
      if (expr.name == "not") return Value::from(!operand.truthy());
      return expr.name == "-" ? arithmetic("-", Value::from(int64_t{0}), operand) : operand;
    }
    case Expr::Kind::Binary: {
      Value left = eval(*expr.operands[0]);
      if (expr.name == "and") return left.truthy() ? eval(*expr.operands[1]) : left;
      if (expr.name == "or") return left.truthy() ? left : eval(*expr.operands[1]);
      const Value right = eval(*expr.operands[1]);
      line_ = expr.line;
      return binary_operation(expr.name, left, right);
    }
    case Expr::Kind::Conditional:
      if (eval(*expr.operands[0]).truthy()) return eval(*expr.operands[1]);
      return expr.operands[2] ? eval(*expr.operands[2]) : Value::undefined();
    case Expr::Kind::List: {
      Array items;
      for (const ExprPtr& item : expr.operands) items.push_back(eval(*item));
      return Value::list(std::move(items));
    }
    case Expr::Kind::Dict: {
      Value dict = Value::dict();
      for (size_t i = 0; i + 1 < expr.operands.size(); i += 2)
        dict.object->set(to_text(eval(*expr.operands[i])), eval(*expr.operands[i + 1]));
      return dict;
    }
  }
  return Value::undefined();
}

}  // namespace
}  // namespace dpo::jinja

namespace dpo {

JinjaTemplate::JinjaTemplate(const std::string& source, std::string name) : name_(std::move(name)) {
  try {
    body_ = std::make_shared<const jinja::Body>(jinja::parse(jinja::lex(source)));
  } catch (const jinja::TemplateFaultAt& fault) {
    fail("{} line {}: {}", name_, fault.line, fault.what());
  }
}

std::string JinjaTemplate::render(const nlohmann::ordered_json& context) const {
  auto globals = std::make_shared<jinja::Frame>();
  if (!context.is_object() && !context.is_null()) fail("{}: the context must be a JSON object", name_);
  if (context.is_object())
    for (const auto& [key, value] : context.items()) (*globals)[key] = jinja::Value::from_json(value);
  std::string out;
  try {
    jinja::Renderer({globals}).run(*body_, out);
  } catch (const jinja::TemplateFaultAt& fault) {
    fail("{} line {}: {}", name_, fault.line, fault.what());
  }
  return out;
}

std::string render_jinja(const std::string& source, const nlohmann::ordered_json& context) {
  return JinjaTemplate(source).render(context);
}

}  // namespace dpo
