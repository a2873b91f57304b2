// Tokens to the syntax tree: statements by recursive descent, expressions by Jinja2's precedence
// (conditional < or < and < not < comparison/in < + - < ~ < * / // % < ** < unary minus <
// postfix . [] () < filters | and tests is).
#include <stdexcept>

#include <fmt/format.h>

#include "jinja_ast.h"

namespace dpo::jinja {
namespace {

using K = Token::Kind;

// Nesting deeper than this (brackets, blocks) is refused rather than recursed into: real templates
// nest a few levels, and a hostile one must not overflow the stack.
constexpr int kMaxNesting = 200;

struct Parser {
  const std::vector<Token>& tokens;
  size_t at = 0;
  int depth = 0;

  struct Nesting {
    Parser& parser;
    explicit Nesting(Parser& p) : parser(p) {
      if (++parser.depth > kMaxNesting) parser.error(fmt::format("nested deeper than {} levels", kMaxNesting));
    }
    ~Nesting() { --parser.depth; }
  };

  const Token& peek(size_t ahead = 0) const { return tokens[std::min(at + ahead, tokens.size() - 1)]; }
  int line() const { return peek().line; }
  [[noreturn]] void error(const std::string& message) const { throw TemplateFaultAt(line(), message); }
  bool is_op(const char* op, size_t ahead = 0) const { return peek(ahead).kind == K::Operator && peek(ahead).text == op; }
  bool is_name(const char* name, size_t ahead = 0) const { return peek(ahead).kind == K::Name && peek(ahead).text == name; }
  bool accept_op(const char* op) { return is_op(op) ? (++at, true) : false; }
  bool accept_name(const char* name) { return is_name(name) ? (++at, true) : false; }
  void expect_op(const char* op) {
    if (!accept_op(op)) error(fmt::format("expected '{}', found '{}'", op, describe(peek())));
  }
  void expect_close() {
    if (peek().kind != K::Close) error(fmt::format("expected end of tag, found '{}'", describe(peek())));
    ++at;
  }
  std::string expect_identifier() {
    if (peek().kind != K::Name) error(fmt::format("expected a name, found '{}'", describe(peek())));
    return tokens[at++].text;
  }
  static std::string describe(const Token& token) {
    if (token.kind == K::Close) return "end of tag";
    if (token.kind == K::End) return "end of template";
    return token.text;
  }

  static std::shared_ptr<Expr> make(Expr::Kind kind, int line) {
    auto expr = std::make_shared<Expr>();
    expr->kind = kind;
    expr->line = line;
    return expr;
  }

  // ---- expressions ----
  ExprPtr expression() {
    Nesting nesting(*this);
    ExprPtr value = or_expr();
    if (!is_name("if")) return value;
    auto conditional = make(Expr::Kind::Conditional, line());
    ++at;
    ExprPtr condition = or_expr();
    ExprPtr otherwise = accept_name("else") ? expression() : nullptr;
    conditional->operands = {condition, value, otherwise};
    return conditional;
  }

  ExprPtr binary(const std::string& op, ExprPtr left, ExprPtr right, int at_line) {
    auto expr = make(Expr::Kind::Binary, at_line);
    expr->name = op;
    expr->operands = {std::move(left), std::move(right)};
    return expr;
  }

  ExprPtr or_expr() {
    ExprPtr left = and_expr();
    while (is_name("or")) {
      const int l = line();
      ++at;
      left = binary("or", left, and_expr(), l);
    }
    return left;
  }
  ExprPtr and_expr() {
    ExprPtr left = not_expr();
    while (is_name("and")) {
      const int l = line();
      ++at;
      left = binary("and", left, not_expr(), l);
    }
    return left;
  }
  ExprPtr not_expr() {
    if (!is_name("not")) return comparison();
    Nesting nesting(*this);
    auto expr = make(Expr::Kind::Unary, line());
    ++at;
    expr->name = "not";
    expr->operands = {not_expr()};
    return expr;
  }
  ExprPtr comparison() {
    ExprPtr left = sum();
    for (;;) {
      const int l = line();
      std::string op;
      for (const char* candidate : {"==", "!=", "<=", ">=", "<", ">"})
        if (is_op(candidate)) op = candidate;
      if (!op.empty()) ++at;
      else if (accept_name("in")) op = "in";
      else if (is_name("not") && is_name("in", 1)) {
        at += 2;
        op = "not in";
      } else return left;
      left = binary(op, left, sum(), l);
    }
  }
  ExprPtr sum() {
    ExprPtr left = concat();
    while (is_op("+") || is_op("-")) {
      const int l = line();
      const std::string op = tokens[at++].text;
      left = binary(op, left, concat(), l);
    }
    return left;
  }
  ExprPtr concat() {
    ExprPtr left = product();
    while (is_op("~")) {
      const int l = line();
      ++at;
      left = binary("~", left, product(), l);
    }
    return left;
  }
  ExprPtr product() {
    ExprPtr left = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const int l = line();
      const std::string op = tokens[at++].text;
      left = binary(op, left, power(), l);
    }
    return left;
  }
  ExprPtr power() {
    ExprPtr left = unary();
    while (is_op("**")) {
      const int l = line();
      ++at;
      left = binary("**", left, unary(), l);
    }
    return left;
  }
  ExprPtr unary() {
    if (is_op("-") || is_op("+")) {
      Nesting nesting(*this);
      auto expr = make(Expr::Kind::Unary, line());
      expr->name = tokens[at++].text;
      expr->operands = {unary()};
      return expr;
    }
    return filters_and_tests(postfix(primary()));
  }

  ExprPtr primary();
  ExprPtr postfix(ExprPtr subject);
  ExprPtr filters_and_tests(ExprPtr subject);
  void arguments(Expr& call);
  ExprPtr subscript(ExprPtr subject);

  // ---- statements ----
  Body body(const std::vector<std::string>& stops, std::string* stop_found);
  NodePtr statement();
  NodePtr if_statement(int l);
  NodePtr for_statement(int l);
  NodePtr set_statement(int l);
  NodePtr macro_statement(int l);
  NodePtr block_with_expression(Node::Kind kind, int l);
};

ExprPtr Parser::primary() {
  const Token& token = peek();
  auto literal = make(Expr::Kind::Literal, token.line);
  switch (token.kind) {
    case K::String:
      literal->literal = Value::from(std::string());
      while (peek().kind == K::String) literal->literal.text += tokens[at++].text;  // 'a' 'b' is 'ab'
      return literal;
    case K::Int:
    case K::Float:
      try {
        literal->literal = token.kind == K::Int ? Value::from(static_cast<int64_t>(std::stoll(token.text)))
                                                : Value::from(std::stod(token.text));
      } catch (const std::out_of_range&) {
        error(fmt::format("number '{}' is out of range", token.text));
      }
      break;
    case K::Name: {
      const std::string& n = token.text;
      if (n == "true" || n == "True") literal->literal = Value::from(true);
      else if (n == "false" || n == "False") literal->literal = Value::from(false);
      else if (n == "none" || n == "None") literal->literal = Value::none();
      else {
        auto name = make(Expr::Kind::Name, token.line);
        name->name = n;
        ++at;
        return name;
      }
      break;
    }
    case K::Operator:
      if (token.text == "(" || token.text == "[") {
        const bool paren = token.text == "(";
        auto list = make(Expr::Kind::List, token.line);
        ++at;
        bool tuple = !paren;
        while (!is_op(paren ? ")" : "]")) {
          list->operands.push_back(expression());
          if (!accept_op(",")) break;
          tuple = true;
        }
        expect_op(paren ? ")" : "]");
        if (!tuple && list->operands.size() == 1) return list->operands[0];
        return list;
      }
      if (token.text == "{") {
        auto dict = make(Expr::Kind::Dict, token.line);
        ++at;
        while (!is_op("}")) {
          dict->operands.push_back(expression());
          expect_op(":");
          dict->operands.push_back(expression());
          if (!accept_op(",")) break;
        }
        expect_op("}");
        return dict;
      }
      [[fallthrough]];
    default: error(fmt::format("unexpected '{}'", describe(token)));
  }
  ++at;
  return literal;
}

void Parser::arguments(Expr& call) {
  expect_op("(");
  while (!is_op(")")) {
    if (peek().kind == K::Name && is_op("=", 1)) {
      call.arg_names.push_back(tokens[at].text);
      at += 2;
    } else {
      call.arg_names.push_back("");
    }
    call.operands.push_back(expression());
    if (!accept_op(",")) break;
  }
  expect_op(")");
}

ExprPtr Parser::subscript(ExprPtr subject) {
  const int l = line();
  expect_op("[");
  std::vector<ExprPtr> parts(1);
  bool is_slice = false;
  while (!is_op("]")) {
    if (accept_op(":")) {
      is_slice = true;
      parts.emplace_back();
      continue;
    }
    if (parts.back()) error("expected ':' or ']' in a subscript");
    parts.back() = expression();
  }
  expect_op("]");
  if (!is_slice) {
    if (!parts[0]) error("empty subscript");
    auto item = make(Expr::Kind::Item, l);
    item->operands = {std::move(subject), parts[0]};
    return item;
  }
  if (parts.size() > 3) error("a slice takes at most start:stop:step");
  parts.resize(3);
  auto slice = make(Expr::Kind::Slice, l);
  slice->operands = {std::move(subject), parts[0], parts[1], parts[2]};
  return slice;
}

ExprPtr Parser::postfix(ExprPtr subject) {
  for (;;) {
    if (is_op(".")) {
      auto attribute = make(Expr::Kind::Attribute, line());
      ++at;
      attribute->name = peek().kind == K::Int ? tokens[at++].text : expect_identifier();
      attribute->operands = {std::move(subject)};
      subject = attribute;
    } else if (is_op("[")) {
      subject = subscript(std::move(subject));
    } else if (is_op("(")) {
      auto call = make(Expr::Kind::Call, line());
      call->operands = {std::move(subject)};
      call->arg_names.push_back("");
      arguments(*call);
      subject = call;
    } else {
      return subject;
    }
  }
}

ExprPtr Parser::filters_and_tests(ExprPtr subject) {
  for (;;) {
    if (accept_op("|")) {
      auto filter = make(Expr::Kind::Filter, line());
      filter->name = expect_identifier();
      filter->operands = {std::move(subject)};
      filter->arg_names.push_back("");
      if (is_op("(")) arguments(*filter);
      subject = postfix(filter);
    } else if (is_name("is")) {
      auto test = make(Expr::Kind::Test, line());
      ++at;
      test->negated = accept_name("not");
      test->name = expect_identifier();
      test->operands = {std::move(subject)};
      test->arg_names.push_back("");
      if (is_op("(")) {
        arguments(*test);
      } else if (peek().kind == K::String || peek().kind == K::Int || peek().kind == K::Float ||
                 (peek().kind == K::Name && !is_name("and") && !is_name("or") && !is_name("else") &&
                  !is_name("if") && !is_name("is") && !is_name("in") && !is_name("not"))) {
        test->arg_names.push_back("");  // "is divisibleby 3", "is equalto 'x'": one argument, no parentheses
        test->operands.push_back(postfix(primary()));
      }
      subject = test;
    } else {
      return subject;
    }
  }
}

Body Parser::body(const std::vector<std::string>& stops, std::string* stop_found) {
  Nesting nesting(*this);
  Body nodes;
  for (;;) {
    const Token& token = peek();
    if (token.kind == K::End) {
      if (stops.empty()) return nodes;
      error(fmt::format("missing '{{% {} %}}' before the end of the template", stops.back()));
    }
    if (token.kind == K::BlockOpen && peek(1).kind == K::Name) {
      for (const std::string& stop : stops)
        if (peek(1).text == stop) {
          at += 2;
          *stop_found = stop;
          return nodes;
        }
    }
    if (NodePtr node = statement()) nodes.push_back(std::move(node));
  }
}

NodePtr Parser::statement() {
  const Token& token = tokens[at++];
  auto node = std::make_shared<Node>();
  node->line = token.line;
  if (token.kind == K::Text) {
    node->kind = Node::Kind::Text;
    node->text = token.text;
    return node;
  }
  if (token.kind == K::OutputOpen) {
    node->kind = Node::Kind::Output;
    node->exprs = {expression()};
    expect_close();
    return node;
  }
  if (token.kind != K::BlockOpen) error(fmt::format("unexpected '{}'", describe(token)));
  const std::string keyword = expect_identifier();
  if (keyword == "if") return if_statement(token.line);
  if (keyword == "for") return for_statement(token.line);
  if (keyword == "set") return set_statement(token.line);
  if (keyword == "macro") return macro_statement(token.line);
  if (keyword == "call") return block_with_expression(Node::Kind::CallBlock, token.line);
  if (keyword == "filter") return block_with_expression(Node::Kind::FilterBlock, token.line);
  if (keyword == "break" || keyword == "continue") {
    node->kind = keyword == "break" ? Node::Kind::Break : Node::Kind::Continue;
    expect_close();
    return node;
  }
  if (keyword == "generation" || keyword == "endgeneration") {  // transformers' assistant-mask marker: no output
    expect_close();
    return nullptr;
  }
  throw TemplateFaultAt(token.line, fmt::format("unknown tag '{}'", keyword));
}

NodePtr Parser::if_statement(int l) {
  auto node = std::make_shared<Node>();
  node->kind = Node::Kind::If;
  node->line = l;
  std::string stop = "elif";
  while (stop == "elif") {
    node->exprs.push_back(expression());
    expect_close();
    node->bodies.push_back(body({"elif", "else", "endif"}, &stop));
  }
  if (stop == "else") {
    expect_close();
    node->bodies.push_back(body({"endif"}, &stop));
  }
  expect_close();
  return node;
}

NodePtr Parser::for_statement(int l) {
  auto node = std::make_shared<Node>();
  node->kind = Node::Kind::For;
  node->line = l;
  do node->targets.push_back(expect_identifier());
  while (accept_op(","));
  if (!accept_name("in")) error("expected 'in' in a for loop");
  node->exprs.push_back(or_expr());
  if (accept_name("if")) node->exprs.push_back(expression());
  accept_name("recursive");
  expect_close();
  std::string stop;
  node->bodies.push_back(body({"else", "endfor"}, &stop));
  if (stop == "else") {
    expect_close();
    node->bodies.push_back(body({"endfor"}, &stop));
  }
  expect_close();
  return node;
}

NodePtr Parser::set_statement(int l) {
  auto node = std::make_shared<Node>();
  node->line = l;
  node->kind = Node::Kind::Set;
  node->targets.push_back(expect_identifier());
  if (accept_op(".")) {
    node->attribute = true;
    node->targets.push_back(expect_identifier());
  } else {
    while (accept_op(",")) node->targets.push_back(expect_identifier());
  }
  if (peek().kind == K::Close && !node->attribute && node->targets.size() == 1) {  // {% set x %}...{% endset %}
    ++at;
    node->kind = Node::Kind::SetBlock;
    std::string stop;
    node->bodies.push_back(body({"endset"}, &stop));
    expect_close();
    return node;
  }
  expect_op("=");
  ExprPtr value = expression();
  if (node->targets.size() > 1 && !node->attribute && is_op(",")) {  // set a, b = 1, 2
    auto tuple = make(Expr::Kind::List, l);
    tuple->operands.push_back(value);
    while (accept_op(",")) tuple->operands.push_back(expression());
    value = tuple;
  }
  node->exprs.push_back(value);
  expect_close();
  return node;
}

NodePtr Parser::macro_statement(int l) {
  auto node = std::make_shared<Node>();
  node->kind = Node::Kind::Macro;
  node->line = l;
  node->text = expect_identifier();
  expect_op("(");
  while (!is_op(")")) {
    node->params.push_back(expect_identifier());
    node->defaults.push_back(accept_op("=") ? expression() : nullptr);
    if (!accept_op(",")) break;
  }
  expect_op(")");
  expect_close();
  std::string stop;
  node->bodies.push_back(body({"endmacro"}, &stop));
  expect_close();
  return node;
}

// {% call macro(args) %}caller body{% endcall %} and {% filter name(args) %}body{% endfilter %}.
NodePtr Parser::block_with_expression(Node::Kind kind, int l) {
  auto node = std::make_shared<Node>();
  node->kind = kind;
  node->line = l;
  if (kind == Node::Kind::CallBlock) {
    node->exprs.push_back(postfix(primary()));
    if (node->exprs[0]->kind != Expr::Kind::Call) error("'call' needs a macro call");
  } else {
    auto filter = make(Expr::Kind::Filter, l);
    filter->name = expect_identifier();
    filter->operands.push_back(nullptr);  // the body's output goes here
    filter->arg_names.push_back("");
    if (is_op("(")) arguments(*filter);
    node->exprs.push_back(filter);
  }
  expect_close();
  std::string stop;
  node->bodies.push_back(body({kind == Node::Kind::CallBlock ? "endcall" : "endfilter"}, &stop));
  expect_close();
  return node;
}

}  // namespace

Body parse(const std::vector<Token>& tokens) {
  Parser parser{tokens, 0, 0};
  std::string stop;
  return parser.body({}, &stop);
}

}  // namespace dpo::jinja
