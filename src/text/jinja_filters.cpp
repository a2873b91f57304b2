// Jinja2's filters and tests as chat templates use them; tojson is transformers' own
// (ensure_ascii=False, keys in their order, optional indent).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "jinja_ast.h"

namespace dpo::jinja {
namespace {

using Kind = Value::Kind;

CallArgs shifted(const CallArgs& args, size_t drop) {
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(std::min(drop, args.positional.size())),
                         args.positional.end());
  rest.named = args.named;
  return rest;
}

// An attribute path as Jinja's filters take it: "a.b" or an index "0".
Value attribute_path(const Value& subject, const std::string& path) {
  Value current = subject;
  size_t start = 0;
  for (;;) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool is_index = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    current = is_index && current.is(Kind::Array) ? get_item(current, Value::from(static_cast<int64_t>(std::stoll(part))))
                                                  : get_item(current, Value::from(part));
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

std::string attribute_name(const CallArgs& args, size_t index) {
  const Value* name = args.get(index, "attribute");
  if (!name) throw TemplateFault("an attribute name is needed");
  return to_text(*name);
}

// select/reject/selectattr/rejectattr: keep items whose test (default: truthiness) is `keep`.
Value select_items(const Value& subject, const CallArgs& args, bool by_attribute, bool keep) {
  Array out;
  const std::string attribute = by_attribute ? attribute_name(args, 0) : "";
  const size_t test_at = by_attribute ? 1 : 0;
  const bool has_test = args.positional.size() > test_at;
  const std::string test = has_test ? to_text(args.positional[test_at]) : "";
  const CallArgs test_args = shifted(args, test_at + 1);
  for (const Value& item : iteration_items(subject)) {
    const Value probe = by_attribute ? attribute_path(item, attribute) : item;
    const bool passed = has_test ? apply_test(test, probe, test_args) : probe.truthy();
    if (passed == keep) out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value map_items(const Value& subject, const CallArgs& args) {
  Array out;
  const Value* attribute = nullptr;
  for (const auto& [key, value] : args.named)
    if (key == "attribute") attribute = &value;
  const Value* fallback = nullptr;
  for (const auto& [key, value] : args.named)
    if (key == "default") fallback = &value;
  for (const Value& item : iteration_items(subject)) {
    if (attribute) {
      Value found = attribute_path(item, to_text(*attribute));
      out.push_back(found.is(Kind::Undefined) && fallback ? *fallback : found);
    } else {
      if (args.positional.empty()) throw TemplateFault("map needs a filter name or attribute=");
      out.push_back(apply_filter(to_text(args.positional[0]), item, shifted(args, 1)));
    }
  }
  return Value::list(std::move(out));
}

Value join_items(const Value& subject, const CallArgs& args) {
  const Value* separator = args.get(0, "d");
  const Value* attribute = args.get(1, "attribute");
  std::string out;
  const Array items = iteration_items(subject);
  for (size_t i = 0; i < items.size(); ++i) {
    if (i && separator) out += to_text(*separator);
    out += to_text(attribute ? attribute_path(items[i], to_text(*attribute)) : items[i]);
  }
  return Value::from(out);
}

// What sort, unique, min and max compare: the item or its attribute, strings lowercased unless
// case_sensitive (Jinja's default is case-insensitive).
Value comparison_key(const Value& item, const Value* attribute, const Value* case_sensitive) {
  Value key = attribute ? attribute_path(item, to_text(*attribute)) : item;
  if (key.is(Kind::String) && !(case_sensitive && case_sensitive->truthy())) key = (*get_attribute(key, "lower").function)({});
  return key;
}

Value sorted_items(const Value& subject, const CallArgs& args) {
  Array items = iteration_items(subject);
  const Value* reverse = args.get(0, "reverse");
  const Value* attribute = args.get(2, "attribute");
  auto key = [&](const Value& v) { return comparison_key(v, attribute, args.get(1, "case_sensitive")); };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) { return less_than(key(a), key(b)); });
  if (reverse && reverse->truthy()) std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}

Value indent_text(const Value& subject, const CallArgs& args) {
  const Value* width = args.get(0, "width");
  const std::string pad = width && width->is(Kind::String) ? width->text
                                                           : std::string(width ? static_cast<size_t>(width->integer) : 4, ' ');
  const Value* first = args.get(1, "first");
  const Value* blank = args.get(2, "blank");
  const std::string text = to_text(subject);
  std::string out;
  size_t start = 0;
  for (bool first_line = true; start <= text.size(); first_line = false) {
    size_t end = text.find('\n', start);
    const std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const bool add = first_line ? (first && first->truthy()) : (!line.empty() || (blank && blank->truthy()));
    out += (first_line ? "" : "\n") + (add ? pad : "") + line;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return Value::from(out);
}

Value number_filter(const std::string& name, const Value& subject, const CallArgs& args) {
  if (name == "int") {
    if (subject.is(Kind::String)) {
      try {
        return Value::from(static_cast<int64_t>(std::stoll(subject.text)));
      } catch (const std::exception&) {
        const Value* fallback = args.get(0, "default");
        return fallback ? *fallback : Value::from(int64_t{0});
      }
    }
    return subject.is_number() ? Value::from(static_cast<int64_t>(subject.as_double())) : Value::from(int64_t{0});
  }
  if (name == "float") {
    if (subject.is(Kind::String)) {
      try {
        return Value::from(std::stod(subject.text));
      } catch (const std::exception&) {
        return Value::from(0.0);
      }
    }
    return Value::from(subject.is_number() ? subject.as_double() : 0.0);
  }
  if (name == "abs") return subject.is(Kind::Int) ? Value::from(static_cast<int64_t>(std::llabs(subject.integer))) : Value::from(std::fabs(subject.as_double()));
  const Value* precision = args.get(0, "precision");
  const double scale = std::pow(10.0, precision && precision->is(Kind::Int) ? static_cast<double>(precision->integer) : 0.0);
  return Value::from(std::round(subject.as_double() * scale) / scale);
}

Value collection_filter(const std::string& name, const Value& subject, const CallArgs& args) {
  if (name == "first" || name == "last") {
    const Array items = iteration_items(subject);
    if (items.empty()) return Value::undefined();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "items") {
    if (subject.is(Kind::Undefined)) return Value::list();
    if (!subject.is(Kind::Object)) throw TemplateFault(fmt::format("items needs a mapping, got {}", type_name(subject)));
    Array pairs;
    for (const auto& [key, value] : subject.object->entries) pairs.push_back(Value::list({Value::from(key), value}));
    return Value::list(std::move(pairs));
  }
  if (name == "list") return Value::list(iteration_items(subject));
  if (name == "reverse") {
    if (subject.is(Kind::String)) return slice_of(subject, Value::none(), Value::none(), Value::from(int64_t{-1}));
    Array items = iteration_items(subject);
    std::reverse(items.begin(), items.end());
    return Value::list(std::move(items));
  }
  if (name == "unique") {
    Array out, keys;
    for (const Value& item : iteration_items(subject)) {
      const Value key = comparison_key(item, args.get(1, "attribute"), args.get(0, "case_sensitive"));
      if (std::none_of(keys.begin(), keys.end(), [&](const Value& seen) { return equals(seen, key); })) {
        keys.push_back(key);
        out.push_back(item);
      }
    }
    return Value::list(std::move(out));
  }
  if (name == "sum") {
    Value total = Value::from(int64_t{0});
    const Value* attribute = args.get(0, "attribute");
    for (const Value& item : iteration_items(subject)) {
      const Value term = attribute ? attribute_path(item, to_text(*attribute)) : item;
      total = total.is(Kind::Int) && term.is(Kind::Int) ? Value::from(total.integer + term.integer)
                                                        : Value::from(total.as_double() + term.as_double());
    }
    return total;
  }
  if (name == "sort") return sorted_items(subject, args);
  if (name == "min" || name == "max") {
    const Array items = iteration_items(subject);
    if (items.empty()) return Value::undefined();
    auto before = [&](const Value& a, const Value& b) {
      return less_than(comparison_key(a, args.get(1, "attribute"), args.get(0, "case_sensitive")),
                       comparison_key(b, args.get(1, "attribute"), args.get(0, "case_sensitive")));
    };
    return name == "min" ? *std::min_element(items.begin(), items.end(), before)
                         : *std::max_element(items.begin(), items.end(), before);
  }
  throw TemplateFault(fmt::format("unknown filter '{}'", name));
}

Value text_filter(const std::string& name, const Value& subject, const CallArgs& args) {
  const std::string text = to_text(subject);
  auto method = [&](const std::string& method_name, const CallArgs& method_args) {
    return (*get_attribute(Value::from(text), method_name).function)(method_args);
  };
  if (name == "trim") return method("strip", args);
  if (name == "upper" || name == "lower" || name == "capitalize") return method(name, {});
  if (name == "title") return Value::from(title_filter(text));
  if (name == "replace") return method("replace", args);
  if (name == "string" || name == "safe") return Value::from(text);
  if (name == "indent") return indent_text(subject, args);
  if (name == "escape" || name == "e") {
    std::string out;
    for (char c : text) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
      }
    }
    return Value::from(out);
  }
  if (name == "wordcount") return Value::from(static_cast<int64_t>(method("split", {}).array->size()));
  throw TemplateFault(fmt::format("unknown filter '{}'", name));
}

}  // namespace

Value apply_filter(const std::string& name, const Value& subject, const CallArgs& args) {
  if (name == "length" || name == "count") {
    if (subject.is(Kind::String)) return Value::from(static_cast<int64_t>(code_points(subject.text).size()));
    return Value::from(static_cast<int64_t>(iteration_items(subject).size()));
  }
  if (name == "tojson") {
    const Value* indent = args.get(0, "indent");
    return Value::from(to_json_text(subject, indent && indent->is(Kind::Int) ? static_cast<int>(indent->integer) : -1));
  }
  if (name == "default" || name == "d") {
    const Value* fallback = args.get(0, "default_value");
    const Value* boolean = args.get(1, "boolean");
    const bool use = subject.is(Kind::Undefined) || (boolean && boolean->truthy() && !subject.truthy());
    return use ? (fallback ? *fallback : Value::from(std::string())) : subject;
  }
  if (name == "join") return join_items(subject, args);
  if (name == "map") return map_items(subject, args);
  if (name == "select" || name == "reject") return select_items(subject, args, false, name == "select");
  if (name == "selectattr" || name == "rejectattr") return select_items(subject, args, true, name == "selectattr");
  if (name == "int" || name == "float" || name == "abs" || name == "round") return number_filter(name, subject, args);
  static const char* text_filters[] = {"trim", "upper", "lower", "capitalize", "title", "replace", "string",
                                       "safe", "indent", "escape", "e", "wordcount"};
  for (const char* text_name : text_filters)
    if (name == text_name) return text_filter(name, subject, args);
  return collection_filter(name, subject, args);
}

bool apply_test(const std::string& name, const Value& subject, const CallArgs& args) {
  const Value* other = args.get(0, "value");
  auto argument = [&]() -> const Value& {
    if (!other) throw TemplateFault(fmt::format("test '{}' needs an argument", name));
    return *other;
  };
  if (name == "defined") return !subject.is(Kind::Undefined);
  if (name == "undefined") return subject.is(Kind::Undefined);
  if (name == "none") return subject.is(Kind::None);
  if (name == "string") return subject.is(Kind::String);
  if (name == "mapping") return subject.is(Kind::Object);
  if (name == "iterable") return subject.is(Kind::Array) || subject.is(Kind::Object) || subject.is(Kind::String);
  if (name == "sequence") return subject.is(Kind::Array) || subject.is(Kind::Object) || subject.is(Kind::String);
  if (name == "number") return subject.is(Kind::Int) || subject.is(Kind::Float);
  if (name == "integer") return subject.is(Kind::Int);
  if (name == "float") return subject.is(Kind::Float);
  if (name == "boolean") return subject.is(Kind::Bool);
  if (name == "true") return subject.is(Kind::Bool) && subject.boolean;
  if (name == "false") return subject.is(Kind::Bool) && !subject.boolean;
  if (name == "callable") return subject.is(Kind::Function);
  if (name == "equalto" || name == "eq" || name == "==" || name == "sameas") return equals(subject, argument());
  if (name == "ne" || name == "!=") return !equals(subject, argument());
  if (name == "lt" || name == "lessthan" || name == "<") return less_than(subject, argument());
  if (name == "gt" || name == "greaterthan" || name == ">") return less_than(argument(), subject);
  if (name == "le" || name == "<=") return !less_than(argument(), subject);
  if (name == "ge" || name == ">=") return !less_than(subject, argument());
  if (name == "in") return contains(argument(), subject);
  if (name == "odd" || name == "even") {
    if (!subject.is(Kind::Int)) throw TemplateFault(fmt::format("test '{}' needs an integer", name));
    return (subject.integer % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    const Value& divisor = argument();
    if (!subject.is(Kind::Int) || !divisor.is(Kind::Int) || divisor.integer == 0)
      throw TemplateFault("test 'divisibleby' needs integers");
    return subject.integer % divisor.integer == 0;
  }
  if (name == "lower" || name == "upper") {
    if (!subject.is(Kind::String)) return false;
    const Value changed = (*get_attribute(subject, name).function)({});
    return changed.text == subject.text;
  }
  throw TemplateFault(fmt::format("unknown test '{}'", name));
}

}  // namespace dpo::jinja
