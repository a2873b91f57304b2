// The Jinja subset of chat templates, construct by construct, with Jinja2's semantics as
// transformers configures it (trim_blocks, lstrip_blocks, undefined renders empty).
#include <string>

#include "catch2_api.h"

#include "dpo/error.h"
#include "dpo/text/jinja.h"

namespace {

std::string render(const std::string& source, const std::string& context_json = "{}") {
  return dpo::render_jinja(source, nlohmann::ordered_json::parse(context_json));
}

std::string error_of(const std::string& source, const std::string& context_json = "{}") {
  try {
    render(source, context_json);
  } catch (const dpo::Error& error) {
    return error.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("text and expressions render with Python's str of each value", "[jinja]") {
  CHECK(render("Hello {{ name }}!", R"({"name": "Ada"})") == "Hello Ada!");
  CHECK(render("{{ 1 + 2 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1.5 * 2 }}") == "3 3.5 3 2 1024 3.0");
  CHECK(render("{{ true }} {{ none }} {{ [1, 'a'] }} {{ {'k': 'v'} }}") == "True None [1, 'a'] {'k': 'v'}");
  CHECK(render("{{ 'a' ~ 1 ~ none }}|{{ 'x' + 'y' }}|{{ 'ab' * 2 }}") == "a1None|xy|abab");
  CHECK(render("{{ 0.1 + 0.2 }} {{ 1e20 * 1.0 }}") == "0.30000000000000004 1e+20");
}

TEST_CASE("undefined renders empty, is falsy, and is refused only when its attribute is taken", "[jinja]") {
  CHECK(render("[{{ missing }}]{% if missing %}yes{% else %}no{% endif %}") == "[]no");
  CHECK(render("{{ missing is defined }} {{ missing is not defined }} {{ missing | length }}") == "False True 0");
  CHECK(render("{% for x in missing %}x{% endfor %}done") == "done");
  CHECK(error_of("line one\n{{ missing.attr }}") == "template line 2: 'missing' is undefined");
}

TEST_CASE("if, elif and else pick the first true branch", "[jinja]") {
  const std::string source = "{% if n > 2 %}big{% elif n == 2 %}two{% else %}small{% endif %}";
  CHECK(render(source, R"({"n": 3})") == "big");
  CHECK(render(source, R"({"n": 2})") == "two");
  CHECK(render(source, R"({"n": 1})") == "small");
  CHECK(render("{{ 'yes' if flag else 'no' }}{{ 'x' if false }}", R"({"flag": true})") == "yes");
}

TEST_CASE("for loops expose loop.* and support else, filters, unpacking, break and continue", "[jinja]") {
  CHECK(render("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
               "{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
               R"({"xs": ["a", "b"]})") == "1021TrueFalse2;2110FalseTrue2;");
  CHECK(render("{% for x in [] %}x{% else %}empty{% endfor %}") == "empty");
  CHECK(render("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}/{{ loop.length }} {% endfor %}") == "2/2 4/2 ");
  CHECK(render("{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}", R"({"d": {"b": 1, "a": 2}})") == "b=1,a=2,");
  CHECK(render("{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}") == "02");
  CHECK(render("{% for x in xs %}{{ loop.previtem }}>{{ x }}<{{ loop.nextitem }} {% endfor %}", R"({"xs": [1, 2]})") == ">1<2 1>2< ");
  CHECK(render("{% for c in 'añ' %}[{{ c }}]{% endfor %}") == "[a][ñ]");
  CHECK(render("{% for x in [1,2,3] %}{{ loop.cycle('o', 'e') }}{% endfor %}") == "oeo");
}

TEST_CASE("set inside a loop stays in the loop, while namespace() attributes carry out", "[jinja]") {
  CHECK(render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}") == "1");
  CHECK(render("{% set ns = namespace(found=false, n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}"
               "{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}") == "True 6");
  CHECK(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set block %}in {{ a }}{% endset %}[{{ block }}]") == "12[in 1]");
  CHECK(error_of("{% set x = 1 %}\n{% set x.y = 2 %}") == "template line 2: cannot assign attribute 'y' of 'x': not a namespace()");
}

TEST_CASE("macros take defaults and keywords, and call blocks pass caller()", "[jinja]") {
  CHECK(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
               "{{ greet('Ada') }} {{ greet('Bob', punct='?') }} {{ greet(name='Cy') }}") == "Hi Ada! Hi Bob? Hi Cy!");
  CHECK(render("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}inside{% endcall %}") == "[inside]");
  CHECK(render("{% set g = 'global' %}{% macro m() %}{{ g }}{% endmacro %}{{ m() }}") == "global");
}

TEST_CASE("whitespace control: - strips, trim_blocks eats a newline, lstrip_blocks the indent", "[jinja]") {
  CHECK(render("a  {{- 'b' -}}  c") == "abc");
  CHECK(render("{% if true %}\nyes\n{% endif %}\n") == "yes\n");
  CHECK(render("  {% if true %}\n    x\n  {% endif %}\nend") == "    x\nend");
  CHECK(render("a {%- if true -%} b {%- endif %} c") == "ab c");
  CHECK(render("  {%+ if true %}x{% endif %}") == "  x");
  CHECK(render("{{ 'a' }}\n{{ 'b' }}") == "a\nb");  // trim_blocks does not apply to {{ }}
  CHECK(render("a{# a comment #}b\n  {#- stripped -#}  c") == "abc");
  CHECK(render("{% raw %}\n{{ kept }} {% if %}\n{% endraw %}\nafter") == "\n{{ kept }} {% if %}\nafter");
  CHECK(render("x {%- raw -%}  {{ a }}  {%- endraw -%} y") == "x{{ a }}y");
  CHECK(render("  {% raw %}a{% endraw %}") == "a");
}

TEST_CASE("filters behave as Jinja2's, tojson as transformers'", "[jinja]") {
  const std::string people = R"({"people": [{"name": "Ada", "role": "admin"}, {"name": "Bob", "role": "user"}, {"name": "Cy"}]})";
  CHECK(render("{{ '  x y  ' | trim }}|{{ 'aXb' | upper }}|{{ 'aXb' | lower }}|{{ 'a-b-c' | replace('-', '+') }}") == "x y|AXB|axb|a+b+c");
  CHECK(render("{{ people | length }} {{ (people | first).name }} {{ (people | last).name }}", people) == "3 Ada Cy");
  CHECK(render("{{ people | map(attribute='name') | join(', ') }}", people) == "Ada, Bob, Cy");
  CHECK(render("{{ people | selectattr('role', 'equalto', 'user') | map(attribute='name') | list }}", people) == "['Bob']");
  CHECK(render("{{ people | rejectattr('role', 'defined') | map(attribute='name') | first }}", people) == "Cy");
  CHECK(render("{{ people | selectattr('role') | list | length }}", people) == "2");
  CHECK(render("{{ missing | default('d') }} {{ '' | default('e', true) }} {{ 'x' | default('f') }}") == "d e x");
  CHECK(render("{% for k, v in {'a': 1} | items %}{{ k }}{{ v }}{% endfor %} {{ 3 | string ~ 'x' }}") == "a1 3x");
  CHECK(render(R"({{ {"b": [1, 2.5, null, true], "a": "é\n\"q\""} | tojson }})") ==
        R"({"b": [1, 2.5, null, true], "a": "é\n\"q\""})");
  CHECK(render("{{ {'a': [1, {}], 'b': []} | tojson(indent=2) }}") == "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}");
  CHECK(render("{{ ['b', 'a'] | sort | join }} {{ [1, 1, 2] | unique | list }} {{ 'abc' | reverse }} {{ [3, 4] | sum }}") == "ab [1, 2] cba 7");
  CHECK(render("{{ ['b', 'A', 'a'] | sort | join }} {{ ['b', 'A', 'a'] | sort(case_sensitive=true) | join }} {{ ['a', 'A'] | unique | list }}"
               " {{ ['b', 'A'] | min }} {{ [{'n': 2}, {'n': 1}] | sort(attribute='n') | map(attribute='n') | join }}") == "Aab Aab ['a'] A 12");
  CHECK(render("{{ 'hello world' | title }} {{ 'hello' | capitalize }} {{ 'a\nb' | indent(2) }}") == "Hello World Hello a\n  b");
  CHECK(render("{{ \"it's a-b\" | title }} {{ \"it's a-b\".title() }}") == "It's A-B It'S A-B");  // filter vs str.title
}

TEST_CASE("tests: defined, none, string, mapping, iterable, number, sequence, equalto, true/false", "[jinja]") {
  const std::string values = R"({"s": "x", "n": 1, "f": 1.5, "l": [1], "d": {"k": 1}, "z": null, "t": true})";
  CHECK(render("{{ s is string }}{{ n is string }}{{ d is mapping }}{{ l is mapping }}{{ z is none }}{{ s is none }}", values) ==
        "TrueFalseTrueFalseTrueFalse");
  CHECK(render("{{ l is iterable }}{{ n is iterable }}{{ n is number }}{{ f is number }}{{ s is number }}{{ l is sequence }}", values) ==
        "TrueFalseTrueTrueFalseTrue");
  CHECK(render("{{ n is equalto 1 }}{{ n is eq(2) }}{{ t is true }}{{ n is true }}{{ t is false }}{{ 4 is divisibleby 2 }}", values) ==
        "TrueFalseTrueFalseFalseTrue");
  CHECK(render("{{ s is not string }}{{ not s is string }}{{ 3 is odd }}", values) == "FalseFalseTrue");
}

TEST_CASE("string and dict methods, slicing and membership follow Python", "[jinja]") {
  CHECK(render("{{ ' x '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ ' a'.lstrip() }}|{{ 'a '.rstrip() }}|") == "x|a|a|a|");
  CHECK(render("{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }}") ==
        "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c']");
  CHECK(render("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith(('x', 'a')) }}") == "TrueTrueTrue");
  CHECK(render("{{ 'ab'.upper() }}{{ 'AB'.lower() }}{{ 'a-a'.replace('a', 'b') }}{{ 'hi you'.title() }}") == "ABabb-bHi You");
  CHECK(render("{{ d.get('a') }} {{ d.get('z', 9) }} {{ d.get('z') }} {{ d.keys() | list }} {{ d.values() | list }}",
               R"({"d": {"a": 1, "b": 2}})") == "1 9 None ['a', 'b'] [1, 2]");
  CHECK(render("{{ xs[1:] }} {{ xs[:-1] }} {{ xs[::-1] }} {{ xs[::2] }} {{ xs[-1] }} {{ 'héllo'[1:3] }} {{ 'abc'[::-1] }}",
               R"({"xs": [1, 2, 3]})") == "[2, 3] [1, 2] [3, 2, 1] [1, 3] 3 él cba");
  CHECK(render("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}") == "True True True True");
  CHECK(render("{{ 1 < 2 and 2 <= 2 and 'a' < 'b' and not (1 == 2) and 1 != 2 }} {{ 0 or 'x' }} {{ 1 and 0 }}") == "True x 0");
  CHECK(render("{{ messages[0]['content'] }}{{ messages[0].role }}", R"({"messages": [{"role": "user", "content": "c"}]})") == "cuser");
}

TEST_CASE("a template error is one line naming the template line", "[jinja]") {
  CHECK(error_of("one\ntwo\n{% if x %}") == "template line 3: missing '{% endif %}' before the end of the template");
  CHECK(error_of("{{ 1 +\n}}") == "template line 2: unexpected 'end of tag'");
  CHECK(error_of("a\n{% frobnicate %}") == "template line 2: unknown tag 'frobnicate'");
  CHECK(error_of("a\nb\n{{ x | nosuchfilter }}") == "template line 3: unknown filter 'nosuchfilter'");
  CHECK(error_of("{{ 'a' - 1 }}") == "template line 1: unsupported operand types for -: string and int");
  CHECK(error_of("{{ 'unclosed }}") == "template line 1: unterminated string");
  CHECK(error_of("\n{{ 99999999999999999999 }}") == "template line 2: number '99999999999999999999' is out of range");
}

TEST_CASE("raise_exception's message becomes the error, with the line it was raised on", "[jinja]") {
  const std::string source =
      "{% for m in messages %}\n"
      "{% if m.role not in ['user', 'assistant'] %}\n"
      "{{ raise_exception('Only user and assistant roles are supported, got ' ~ m.role) }}\n"
      "{% endif %}{% endfor %}";
  CHECK(error_of(source, R"({"messages": [{"role": "tool"}]})") ==
        "template line 3: Only user and assistant roles are supported, got tool");
  CHECK(error_of("{% macro check() %}\n{{ raise_exception('inside') }}{% endmacro %}\n{{ check() }}") == "template line 2: inside");
}

TEST_CASE("runaway nesting, recursion, integer overflow and huge ranges are refused, not run", "[jinja]") {
  CHECK(error_of("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}") ==
        "template line 1: nested deeper than 200 levels");
  CHECK(error_of(std::string(300, ' ') + "{{ " + std::string(100000, '-') + "1 }}") == "template line 1: nested deeper than 200 levels");
  CHECK(error_of("{{ 9223372036854775807 + 1 }}") == "template line 1: integer overflow in 9223372036854775807 + 1");
  CHECK(error_of("{{ 'ab' * 1000000000000 }}") == "template line 1: string repetition past 1073741824 bytes");
  CHECK(error_of("{% for i in range(100000000000) %}{% endfor %}") == "template line 1: range() longer than 10000000");
  CHECK(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}") == "template line 1: macro 'f': calls nested deeper than 100");
}
