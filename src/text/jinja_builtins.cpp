// Jinja2's built-in filters, tests and globals that chat templates use, Python's str and dict
// methods, subscripts and slices, each with Python's semantics (code points, not bytes).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>

#include <fmt/format.h>
#include <utf8proc.h>

#include "jinja_ast.h"

namespace dpo::jinja {
namespace {

using Kind = Value::Kind;

bool is_python_space(int32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

const std::string& text_of(const Value& value, const char* what) {
  if (!value.is(Kind::String)) throw TemplateFault(fmt::format("{} needs a string, got {}", what, type_name(value)));
  return value.text;
}

std::string optional_text(const CallArgs& args, size_t index, const std::string& name, const std::string& fallback) {
  const Value* value = args.get(index, name);
  return value && value->is(Kind::String) ? value->text : fallback;
}

// str.strip / lstrip / rstrip: `chars` given, or Unicode whitespace.
std::string strip(const std::string& text, const Value* chars, bool left, bool right) {
  const std::vector<int32_t> points = code_points(text);
  const std::vector<int32_t> set = chars && chars->is(Kind::String) ? code_points(chars->text) : std::vector<int32_t>{};
  auto strippable = [&](int32_t c) {
    return chars && chars->is(Kind::String) ? std::find(set.begin(), set.end(), c) != set.end() : is_python_space(c);
  };
  size_t begin = 0, end = points.size();
  while (left && begin < end && strippable(points[begin])) ++begin;
  while (right && end > begin && strippable(points[end - 1])) --end;
  return utf8_of(std::vector<int32_t>(points.begin() + static_cast<std::ptrdiff_t>(begin), points.begin() + static_cast<std::ptrdiff_t>(end)));
}

enum class Case { Upper, Lower, Capitalize, TitleFilter, TitleMethod };

std::string change_case(const std::string& text, Case mode) {
  std::vector<int32_t> points = code_points(text);
  bool word_start = true;
  for (size_t i = 0; i < points.size(); ++i) {
    const int32_t c = points[i];
    bool upper = mode == Case::Upper || (mode == Case::Capitalize && i == 0);
    if (mode == Case::TitleFilter || mode == Case::TitleMethod) upper = word_start;
    points[i] = upper ? utf8proc_toupper(c) : utf8proc_tolower(c);
    const auto category = utf8proc_category(c);
    const bool cased = category == UTF8PROC_CATEGORY_LU || category == UTF8PROC_CATEGORY_LL || category == UTF8PROC_CATEGORY_LT;
    // Jinja's title filter starts words after - space ( { [ <; str.title after any uncased character.
    word_start = mode == Case::TitleFilter ? (c == '-' || is_python_space(c) || c == '(' || c == '{' || c == '[' || c == '<')
                                           : !cased;
  }
  return utf8_of(points);
}

std::string replace_all(std::string text, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return text;  // Python inserts between characters; no template does that
  size_t at = 0;
  for (int64_t done = 0; (count < 0 || done < count) && (at = text.find(from, at)) != std::string::npos; ++done) {
    text.replace(at, from.size(), to);
    at += to.size();
  }
  return text;
}

Value split(const std::string& text, const Value* separator, int64_t max_split) {
  Array parts;
  if (!separator || separator->is(Kind::None) || separator->is(Kind::Undefined)) {
    const std::vector<int32_t> points = code_points(text);
    size_t i = 0;
    while (i < points.size()) {
      while (i < points.size() && is_python_space(points[i])) ++i;
      if (i == points.size()) break;
      size_t j = i;
      if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) j = points.size();
      else while (j < points.size() && !is_python_space(points[j])) ++j;
      std::vector<int32_t> word(points.begin() + static_cast<std::ptrdiff_t>(i), points.begin() + static_cast<std::ptrdiff_t>(j));
      if (j == points.size()) word = code_points(strip(utf8_of(word), nullptr, false, true));
      parts.push_back(Value::from(utf8_of(word)));
      i = j;
    }
    return Value::list(std::move(parts));
  }
  const std::string& sep = text_of(*separator, "split's separator");
  if (sep.empty()) throw TemplateFault("split: empty separator");
  size_t start = 0, at;
  while ((max_split < 0 || static_cast<int64_t>(parts.size()) < max_split) && (at = text.find(sep, start)) != std::string::npos) {
    parts.push_back(Value::from(text.substr(start, at - start)));
    start = at + sep.size();
  }
  parts.push_back(Value::from(text.substr(start)));
  return Value::list(std::move(parts));
}

bool affix_matches(const std::string& text, const Value& affix, bool prefix) {
  if (affix.is(Kind::Array)) {
    for (const Value& one : *affix.array)
      if (affix_matches(text, one, prefix)) return true;
    return false;
  }
  const std::string& a = text_of(affix, prefix ? "startswith" : "endswith");
  if (a.size() > text.size()) return false;
  return prefix ? text.compare(0, a.size(), a) == 0 : text.compare(text.size() - a.size(), a.size(), a) == 0;
}

int64_t int_argument(const CallArgs& args, size_t index, const std::string& name, int64_t fallback) {
  const Value* value = args.get(index, name);
  if (!value || value->is(Kind::None)) return fallback;
  if (!value->is(Kind::Int)) throw TemplateFault(fmt::format("'{}' must be an integer", name));
  return value->integer;
}

Value string_method(const std::string& text, const std::string& name, const CallArgs& args) {
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return Value::from(strip(text, args.get(0, "chars"), name != "rstrip", name != "lstrip"));
  if (name == "split") return split(text, args.get(0, "sep"), int_argument(args, 1, "maxsplit", -1));
  if (name == "startswith" || name == "endswith") {
    const Value* affix = args.get(0, "prefix");
    if (!affix) throw TemplateFault(name + " needs an argument");
    return Value::from(affix_matches(text, *affix, name == "startswith"));
  }
  if (name == "upper") return Value::from(change_case(text, Case::Upper));
  if (name == "lower") return Value::from(change_case(text, Case::Lower));
  if (name == "title") return Value::from(change_case(text, Case::TitleMethod));
  if (name == "capitalize") return Value::from(change_case(text, Case::Capitalize));
  if (name == "replace")
    return Value::from(replace_all(text, optional_text(args, 0, "old", ""), optional_text(args, 1, "new", ""),
                                   int_argument(args, 2, "count", -1)));
  if (name == "find") {
    const size_t at = text.find(optional_text(args, 0, "sub", ""));
    return Value::from(at == std::string::npos ? int64_t{-1} : static_cast<int64_t>(code_points(text.substr(0, at)).size()));
  }
  if (name == "count") {
    const std::string sub = optional_text(args, 0, "sub", "");
    int64_t n = 0;
    for (size_t at = text.find(sub); !sub.empty() && at != std::string::npos; at = text.find(sub, at + sub.size())) ++n;
    return Value::from(n);
  }
  if (name == "join") {
    std::string out;
    const Array items = iteration_items(args.positional.empty() ? Value::list() : args.positional[0]);
    for (size_t i = 0; i < items.size(); ++i) out += (i ? text : "") + to_text(items[i]);
    return Value::from(out);
  }
  throw TemplateFault(fmt::format("str has no method '{}'", name));
}

Value dict_method(const std::shared_ptr<Object>& object, const std::string& name, const CallArgs& args) {
  if (name == "get") {
    const Value* key = args.get(0, "key");
    const Value* found = key ? object->find(to_text(*key)) : nullptr;
    if (found) return *found;
    const Value* fallback = args.get(1, "default");
    return fallback ? *fallback : Value::none();
  }
  Array out;
  for (const auto& [key, value] : object->entries) {
    if (name == "keys") out.push_back(Value::from(key));
    else if (name == "values") out.push_back(value);
    else out.push_back(Value::list({Value::from(key), value}));
  }
  return Value::list(std::move(out));
}

// Python's slice.indices: start, stop for a sequence of `length` with `step`.
std::pair<int64_t, int64_t> slice_bounds(const Value& start, const Value& stop, int64_t step, int64_t length) {
  auto bound = [&](const Value& v, int64_t fallback_positive, int64_t fallback_negative) {
    if (!v.is(Kind::Int)) return step > 0 ? fallback_positive : fallback_negative;
    int64_t i = v.integer < 0 ? v.integer + length : v.integer;
    if (step > 0) return std::clamp<int64_t>(i, 0, length);
    return std::clamp<int64_t>(i, -1, length - 1);
  };
  return {bound(start, 0, length - 1), bound(stop, length, -1)};
}

}  // namespace

std::string title_filter(const std::string& text) { return change_case(text, Case::TitleFilter); }

Value get_attribute(const Value& subject, const std::string& name) {
  if (subject.is(Kind::String)) {
    static const char* methods[] = {"strip", "lstrip", "rstrip", "split", "startswith", "endswith", "upper", "lower",
                                    "title", "capitalize", "replace", "find", "count", "join"};
    for (const char* method : methods)
      if (name == method) {
        const std::string text = subject.text;
        return Value::callable([text, name](const CallArgs& args) { return string_method(text, name, args); });
      }
    return Value::undefined(name);
  }
  if (subject.is(Kind::Object)) {
    // As Jinja2's getattr-then-item: a dict's own methods win over its keys (not for namespace()).
    if (!subject.object->is_namespace && (name == "items" || name == "keys" || name == "values" || name == "get")) {
      auto object = subject.object;
      return Value::callable([object, name](const CallArgs& args) { return dict_method(object, name, args); });
    }
    const Value* found = subject.object->find(name);
    return found ? *found : Value::undefined(name);
  }
  return Value::undefined(name);
}

Value get_item(const Value& subject, const Value& key) {
  if (subject.is(Kind::Object)) {
    const Value* found = subject.object->find(to_text(key));
    return found ? *found : get_attribute(subject, to_text(key));
  }
  if ((subject.is(Kind::Array) || subject.is(Kind::String)) && key.is(Kind::Int)) {
    if (subject.is(Kind::Array)) {
      const auto n = static_cast<int64_t>(subject.array->size());
      const int64_t i = key.integer < 0 ? key.integer + n : key.integer;
      return i >= 0 && i < n ? (*subject.array)[static_cast<size_t>(i)] : Value::undefined();
    }
    const std::vector<int32_t> points = code_points(subject.text);
    const auto n = static_cast<int64_t>(points.size());
    const int64_t i = key.integer < 0 ? key.integer + n : key.integer;
    return i >= 0 && i < n ? Value::from(utf8_of({points[static_cast<size_t>(i)]})) : Value::undefined();
  }
  if (key.is(Kind::String)) return get_attribute(subject, key.text);
  return Value::undefined();
}

Value slice_of(const Value& subject, const Value& start, const Value& stop, const Value& step_value) {
  const int64_t step = step_value.is(Kind::Int) ? step_value.integer : 1;
  if (step == 0) throw TemplateFault("slice step cannot be zero");
  const bool is_text = subject.is(Kind::String);
  if (!is_text && !subject.is(Kind::Array)) throw TemplateFault(fmt::format("cannot slice a {}", type_name(subject)));
  const std::vector<int32_t> points = is_text ? code_points(subject.text) : std::vector<int32_t>{};
  const auto length = static_cast<int64_t>(is_text ? points.size() : subject.array->size());
  const auto [from, to] = slice_bounds(start, stop, step, length);
  std::vector<int32_t> text_out;
  Array items_out;
  for (int64_t i = from; step > 0 ? i < to : i > to; i += step) {
    if (is_text) text_out.push_back(points[static_cast<size_t>(i)]);
    else items_out.push_back((*subject.array)[static_cast<size_t>(i)]);
  }
  return is_text ? Value::from(utf8_of(text_out)) : Value::list(std::move(items_out));
}

Array iteration_items(const Value& subject) {
  switch (subject.kind) {
    case Kind::Undefined: return {};
    case Kind::Array: return *subject.array;
    case Kind::Object: {
      Array keys;
      for (const auto& entry : subject.object->entries) keys.push_back(Value::from(entry.first));
      return keys;
    }
    case Kind::String: {
      Array characters;
      for (int32_t point : code_points(subject.text)) characters.push_back(Value::from(utf8_of({point})));
      return characters;
    }
    default: throw TemplateFault(fmt::format("a {} is not iterable", type_name(subject)));
  }
}

bool contains(const Value& container, const Value& item) {
  if (container.is(Kind::String)) {
    if (!item.is(Kind::String)) throw TemplateFault(fmt::format("'in <string>' needs a string, not {}", type_name(item)));
    return container.text.find(item.text) != std::string::npos;
  }
  if (container.is(Kind::Object)) return item.is(Kind::String) && container.object->find(item.text) != nullptr;
  for (const Value& element : iteration_items(container))
    if (equals(element, item)) return true;
  return false;
}

Value global_function(const std::string& name) {
  if (name == "raise_exception")
    return Value::callable([](const CallArgs& args) -> Value {
      throw TemplateFault(args.positional.empty() ? "raise_exception" : to_text(args.positional[0]));
    });
  if (name == "namespace" || name == "dict")
    return Value::callable([name](const CallArgs& args) {
      Value object = Value::dict();
      object.object->is_namespace = name == "namespace";
      if (!args.positional.empty() && args.positional[0].is(Kind::Object)) *object.object = *args.positional[0].object;
      object.object->is_namespace = name == "namespace";
      for (const auto& [key, value] : args.named) object.object->set(key, value);
      return object;
    });
  if (name == "range")
    return Value::callable([](const CallArgs& args) {
      const int64_t one = int_argument(args, 0, "start", 0);
      const int64_t start = args.positional.size() > 1 ? one : 0, stop = args.positional.size() > 1 ? int_argument(args, 1, "stop", 0) : one;
      const int64_t step = int_argument(args, 2, "step", 1);
      if (step == 0) throw TemplateFault("range() step cannot be zero");
      // No template loops this far; the bound keeps a typo from exhausting memory.
      constexpr int64_t kMaxRange = 10'000'000;
      if ((stop - start) / step > kMaxRange) throw TemplateFault(fmt::format("range() longer than {}", kMaxRange));
      Array out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value::from(i));
      return Value::list(std::move(out));
    });
  if (name == "strftime_now")  // transformers' global: the local date and time, strftime-formatted
    return Value::callable([](const CallArgs& args) {
      const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      std::tm local{};
      localtime_r(&now, &local);
      char buffer[256];
      const size_t n = std::strftime(buffer, sizeof buffer, optional_text(args, 0, "format", "%Y-%m-%d").c_str(), &local);
      return Value::from(std::string(buffer, n));
    });
  return Value::undefined(name);
}

}  // namespace dpo::jinja
