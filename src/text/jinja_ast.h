// Internal to the Jinja engine (src/text/jinja_*.cpp): tokens, the syntax tree, and the entry
// points of lexer, parser and the built-in filters, tests and methods.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dpo/text/jinja_value.h"

namespace dpo::jinja {

struct Token {
  enum class Kind { Text, OutputOpen, BlockOpen, Close, Name, String, Int, Float, Operator, End };
  Kind kind;
  std::string text;
  int line;
};

// Source text to tokens, with Jinja2's whitespace control applied to the text between tags:
// {%- -%} and {{- -}} strip, trim_blocks and lstrip_blocks as transformers sets them. Comments are
// dropped here.
std::vector<Token> lex(const std::string& source);

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

struct Expr {
  enum class Kind {
    Literal, Name, Attribute, Item, Slice, Call, Filter, Test, Unary, Binary, Conditional, List, Dict
  };
  Kind kind;
  int line = 0;
  Value literal;                       // Literal
  std::string name;                    // Name, Attribute, Filter/Test name, operator of Unary/Binary
  std::vector<ExprPtr> operands;       // subject first, then arguments / elements / keys+values
  std::vector<std::string> arg_names;  // Call/Filter/Test: "" for positional, else keyword name
  bool negated = false;                // Test: "is not"
};

struct Node;
using NodePtr = std::shared_ptr<const Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind { Text, Output, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, Break, Continue };
  Kind kind;
  int line = 0;
  std::string text;                  // Text; Macro name
  std::vector<std::string> targets;  // For/Set variables; Set "ns.attr" as {"ns", "attr"} with attribute=true
  bool attribute = false;            // Set: target is ns.attr
  std::vector<ExprPtr> exprs;        // Output: value; If: conditions; For: iterable (+ filter); Set: value
  std::vector<Body> bodies;          // If: one per condition (+ else); For: body (+ else)
  std::vector<std::string> params;   // Macro parameter names
  std::vector<ExprPtr> defaults;     // Macro defaults, nullptr where none
};

// Tokens to the template body; a syntax error is a TemplateFaultAt naming the line.
Body parse(const std::vector<Token>& tokens);

// A template error whose line is known (syntax errors, and runtime errors on their way out).
struct TemplateFaultAt : TemplateFault {
  TemplateFaultAt(int at, const std::string& message) : TemplateFault(message), line(at) {}
  int line;
};

// Built-ins (jinja_builtins.cpp). A filter or test that does not exist is a TemplateFault naming it.
Value apply_filter(const std::string& name, const Value& subject, const CallArgs& args);
bool apply_test(const std::string& name, const Value& subject, const CallArgs& args);
// value.name for strings, dicts and lists: a bound method, a dict entry, or undefined.
Value get_attribute(const Value& subject, const std::string& name);
Value get_item(const Value& subject, const Value& key);
Value slice_of(const Value& subject, const Value& start, const Value& stop, const Value& step);
// The values a for loop walks: list items, dict keys, string characters; undefined is empty.
Array iteration_items(const Value& subject);
bool contains(const Value& container, const Value& item);
Value global_function(const std::string& name);
// Jinja's title filter: words start after - whitespace ( { [ < (str.title starts them after any
// uncased character).
std::string title_filter(const std::string& text);  // range, namespace, dict, raise_exception, ...

}  // namespace dpo::jinja
