// The values a chat template computes with: Python's types as Jinja2 sees them (undefined, none,
// bool, int, float, str, list, dict in insertion order, callables), converted from the JSON the
// caller passes in. Lists and dicts are shared, so that namespace() attributes set inside a loop
// are seen outside it, as in Jinja2. No libtorch here.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace dpo::jinja {

// A template error before the template line is known; the renderer adds the line and turns it
// into dpo::Error.
struct TemplateFault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Value;
using Array = std::vector<Value>;

struct Object {
  std::vector<std::pair<std::string, Value>> entries;  // insertion order, as Python dicts
  bool is_namespace = false;                          // namespace(): attributes may be assigned
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> named;
  int depth = 0;  // macro calls active around this one: bounds recursion
  const Value* get(size_t index, const std::string& name) const;  // positional, else by name
};

using Function = std::function<Value(const CallArgs&)>;

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, Array, Object, Function };
  Kind kind = Kind::Undefined;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string text;
  std::shared_ptr<Array> array;
  std::shared_ptr<Object> object;
  std::shared_ptr<Function> function;
  std::string undefined_name;  // for the "'x' is undefined" message

  static Value undefined(std::string name = {});
  static Value none();
  static Value from(bool value);
  static Value from(int64_t value);
  static Value from(double value);
  static Value from(std::string value);
  static Value list(Array items = {});
  static Value dict();
  static Value callable(Function function);
  static Value from_json(const nlohmann::ordered_json& json);  // keys keep their order, as in Python

  bool is(Kind k) const { return kind == k; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  double as_double() const;
  bool truthy() const;
};

// str(value) as Jinja2 prints it: None, True/False, Python's float repr, lists and dicts as repr.
std::string to_text(const Value& value);
// Python's repr(): strings quoted, used inside lists and dicts.
std::string to_repr(const Value& value);
// transformers' tojson: json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=False);
// indent < 0 means none (", " and ": " separators).
std::string to_json_text(const Value& value, int indent = -1);
bool equals(const Value& a, const Value& b);
// Python's a < b for numbers, strings and lists; anything else is a template error.
bool less_than(const Value& a, const Value& b);
std::string type_name(const Value& value);

// Unicode code points of UTF-8 text, and back (len, slicing, iteration count code points).
std::vector<int32_t> code_points(const std::string& utf8);
std::string utf8_of(const std::vector<int32_t>& points);

}  // namespace dpo::jinja
