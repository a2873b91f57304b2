// Jinja2 values: construction from JSON, Python's str/repr, transformers' tojson, equality and
// ordering.
#include "dpo/text/jinja_value.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>
#include <utf8proc.h>

namespace dpo::jinja {

const Value* Object::find(const std::string& key) const {
  for (const auto& [name, value] : entries)
    if (name == key) return &value;
  return nullptr;
}

void Object::set(const std::string& key, Value value) {
  for (auto& [name, existing] : entries)
    if (name == key) {
      existing = std::move(value);
      return;
    }
  entries.emplace_back(key, std::move(value));
}

const Value* CallArgs::get(size_t index, const std::string& name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [key, value] : named)
    if (key == name) return &value;
  return nullptr;
}

Value Value::undefined(std::string name) {
  Value v;
  v.undefined_name = std::move(name);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::from(bool value) {
  Value v;
  v.kind = Kind::Bool;
  v.boolean = value;
  return v;
}
Value Value::from(int64_t value) {
  Value v;
  v.kind = Kind::Int;
  v.integer = value;
  return v;
}
Value Value::from(double value) {
  Value v;
  v.kind = Kind::Float;
  v.number = value;
  return v;
}
Value Value::from(std::string value) {
  Value v;
  v.kind = Kind::String;
  v.text = std::move(value);
  return v;
}
Value Value::list(Array items) {
  Value v;
  v.kind = Kind::Array;
  v.array = std::make_shared<Array>(std::move(items));
  return v;
}
Value Value::dict() {
  Value v;
  v.kind = Kind::Object;
  v.object = std::make_shared<Object>();
  return v;
}
Value Value::callable(Function function) {
  Value v;
  v.kind = Kind::Function;
  v.function = std::make_shared<Function>(std::move(function));
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& json) {
  using value_t = nlohmann::ordered_json::value_t;
  switch (json.type()) {
    case value_t::null: return none();
    case value_t::boolean: return from(json.get<bool>());
    case value_t::number_integer: return from(json.get<int64_t>());
    case value_t::number_unsigned: return from(static_cast<int64_t>(json.get<uint64_t>()));
    case value_t::number_float: return from(json.get<double>());
    case value_t::string: return from(json.get<std::string>());
    case value_t::array: {
      Array items;
      for (const auto& item : json) items.push_back(from_json(item));
      return list(std::move(items));
    }
    case value_t::object: {
      Value v = dict();
      for (const auto& [key, item] : json.items()) v.object->entries.emplace_back(key, from_json(item));
      return v;
    }
    default: return none();
  }
}

double Value::as_double() const {
  if (kind == Kind::Int) return static_cast<double>(integer);
  if (kind == Kind::Bool) return boolean ? 1 : 0;
  return number;
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return boolean;
    case Kind::Int: return integer != 0;
    case Kind::Float: return number != 0;
    case Kind::String: return !text.empty();
    case Kind::Array: return !array->empty();
    case Kind::Object: return !object->entries.empty();
    case Kind::Function: return true;
  }
  return false;
}

namespace {

// Python's float repr: the shortest digits that read back the same, exponent past 1e16.
std::string float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buffer[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*e", precision - 1, x);
    if (std::strtod(buffer, nullptr) == x) break;
  }
  // buffer holds d.ddde±XX; rebuild it the way Python does.
  std::string text(buffer);
  const size_t e = text.find('e');
  const int exponent = std::atoi(text.c_str() + e + 1);
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (std::isdigit(static_cast<unsigned char>(text[i]))) digits += text[i];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const std::string sign = x < 0 ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    std::string mantissa = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    return fmt::format("{}{}e{}{:02d}", sign, mantissa, exponent < 0 ? '-' : '+', std::abs(exponent));
  }
  if (exponent < 0) return sign + "0." + std::string(-exponent - 1, '0') + digits;
  if (static_cast<int>(digits.size()) <= exponent + 1)
    return sign + digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
  return sign + digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
}

std::string quote_repr(const std::string& text) {
  const char quote = text.find('\'') != std::string::npos && text.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, quote);
  for (char c : text) {
    if (c == quote || c == '\\') out += '\\';
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else out += c;
  }
  return out + quote;
}

void append_json_string(std::string& out, const std::string& text) {
  out += '"';
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) out += fmt::format("\\u{:04x}", c);
        else out += static_cast<char>(c);
    }
  }
  out += '"';
}

void append_json(std::string& out, const Value& value, int indent, int depth) {
  const std::string newline = indent < 0 ? "" : "\n" + std::string(static_cast<size_t>(indent * (depth + 1)), ' ');
  const std::string closing = indent < 0 ? "" : "\n" + std::string(static_cast<size_t>(indent * depth), ' ');
  const std::string comma = indent < 0 ? ", " : ",";
  switch (value.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += value.boolean ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(value.integer); return;
    case Value::Kind::Float: out += std::isfinite(value.number) ? float_repr(value.number) : "NaN"; return;
    case Value::Kind::String: append_json_string(out, value.text); return;
    case Value::Kind::Function: throw TemplateFault("a function cannot be written as JSON");
    case Value::Kind::Array:
      if (value.array->empty()) return void(out += "[]");
      out += "[";
      for (size_t i = 0; i < value.array->size(); ++i) {
        out += (i ? comma : "") + newline;
        append_json(out, (*value.array)[i], indent, depth + 1);
      }
      out += closing + "]";
      return;
    case Value::Kind::Object:
      if (value.object->entries.empty()) return void(out += "{}");
      out += "{";
      for (size_t i = 0; i < value.object->entries.size(); ++i) {
        out += (i ? comma : "") + newline;
        append_json_string(out, value.object->entries[i].first);
        out += ": ";
        append_json(out, value.object->entries[i].second, indent, depth + 1);
      }
      out += closing + "}";
      return;
  }
}

int compare_numbers(double a, double b) { return a < b ? -1 : (a > b ? 1 : 0); }

}  // namespace

std::string to_repr(const Value& value) {
  if (value.is(Value::Kind::String)) return quote_repr(value.text);
  return to_text(value);
}

std::string to_text(const Value& value) {
  switch (value.kind) {
    case Value::Kind::Undefined: return "";
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return value.boolean ? "True" : "False";
    case Value::Kind::Int: return std::to_string(value.integer);
    case Value::Kind::Float: return float_repr(value.number);
    case Value::Kind::String: return value.text;
    case Value::Kind::Function: return "<function>";
    case Value::Kind::Array: {
      std::string out = "[";
      for (size_t i = 0; i < value.array->size(); ++i) out += (i ? ", " : "") + to_repr((*value.array)[i]);
      return out + "]";
    }
    case Value::Kind::Object: {
      std::string out = "{";
      for (size_t i = 0; i < value.object->entries.size(); ++i)
        out += (i ? ", " : "") + quote_repr(value.object->entries[i].first) + ": " +
               to_repr(value.object->entries[i].second);
      return out + "}";
    }
  }
  return "";
}

std::string to_json_text(const Value& value, int indent) {
  std::string out;
  append_json(out, value, indent, 0);
  return out;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is(Value::Kind::Float) || b.is(Value::Kind::Float)) return a.as_double() == b.as_double();
    return (a.is(Value::Kind::Int) ? a.integer : a.boolean) == (b.is(Value::Kind::Int) ? b.integer : b.boolean);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return true;
    case Value::Kind::String: return a.text == b.text;
    case Value::Kind::Function: return a.function == b.function;
    case Value::Kind::Array:
      if (a.array->size() != b.array->size()) return false;
      for (size_t i = 0; i < a.array->size(); ++i)
        if (!equals((*a.array)[i], (*b.array)[i])) return false;
      return true;
    case Value::Kind::Object:
      if (a.object->entries.size() != b.object->entries.size()) return false;
      for (const auto& [key, item] : a.object->entries) {
        const Value* other = b.object->find(key);
        if (!other || !equals(item, *other)) return false;
      }
      return true;
    default: return false;
  }
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return compare_numbers(a.as_double(), b.as_double()) < 0;
  if (a.is(Value::Kind::String) && b.is(Value::Kind::String)) return a.text < b.text;
  if (a.is(Value::Kind::Array) && b.is(Value::Kind::Array)) {
    const size_t n = std::min(a.array->size(), b.array->size());
    for (size_t i = 0; i < n; ++i) {
      if (less_than((*a.array)[i], (*b.array)[i])) return true;
      if (less_than((*b.array)[i], (*a.array)[i])) return false;
    }
    return a.array->size() < b.array->size();
  }
  throw TemplateFault(fmt::format("'<' not supported between {} and {}", type_name(a), type_name(b)));
}

std::string type_name(const Value& value) {
  switch (value.kind) {
    case Value::Kind::Undefined: return "undefined";
    case Value::Kind::None: return "none";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::String: return "string";
    case Value::Kind::Array: return "list";
    case Value::Kind::Object: return "dict";
    case Value::Kind::Function: return "function";
  }
  return "value";
}

std::vector<int32_t> code_points(const std::string& utf8) {
  std::vector<int32_t> points;
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(utf8.data());
  utf8proc_ssize_t at = 0;
  const auto size = static_cast<utf8proc_ssize_t>(utf8.size());
  while (at < size) {
    utf8proc_int32_t point = 0;
    utf8proc_ssize_t used = utf8proc_iterate(bytes + at, size - at, &point);
    if (used <= 0) {  // invalid UTF-8: keep the byte as it is (U+FFFD would change the text)
      point = bytes[at];
      used = 1;
    }
    points.push_back(point);
    at += used;
  }
  return points;
}

std::string utf8_of(const std::vector<int32_t>& points) {
  std::string out;
  for (int32_t point : points) {
    utf8proc_uint8_t buffer[4];
    const utf8proc_ssize_t n = utf8proc_encode_char(point, buffer);
    out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
  }
  return out;
}

}  // namespace dpo::jinja
