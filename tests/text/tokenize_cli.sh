#!/usr/bin/env bash
# `dpo tokenize` prints Hugging Face tokenizers' ids (the committed goldens) for every corpus line,
# with and without special tokens, the decoded text under --decode, and refuses a chat line with
# a clear message. usage: tokenize_cli.sh DPO FIXTURES CACHE
set -euo pipefail
dpo=$1 fixtures=$2 cache=${DPO_TOKENIZER_CACHE:-$3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -s "$cache/llama3/tokenizer.json" ]] || { echo "missing $cache/llama3: run scripts/fetch_tokenizers.sh"; exit 1; }
for name in llama3 llama2; do
  "$dpo" tokenize --tokenizer "$cache/$name" --decode "$fixtures/corpus.jsonl" > "$work/$name.special.jsonl"
  "$dpo" tokenize --tokenizer "$cache/$name/tokenizer.json" --no-special "$fixtures/corpus.jsonl" > "$work/$name.plain.jsonl"
  node -e '
    const fs = require("fs");
    const [golden, special, plain] = process.argv.slice(1).map((f) => fs.readFileSync(f, "utf8"));
    const lines = JSON.parse(golden).lines;
    const rows = (text) => text.split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
    const s = rows(special), p = rows(plain);
    if (s.length !== lines.length || p.length !== lines.length) throw new Error("one output line per input line");
    lines.forEach((g, i) => {
      if (JSON.stringify(s[i].ids) !== JSON.stringify(g.ids_with_special)) throw new Error(`line ${i + 1}: ids differ`);
      if (JSON.stringify(p[i].ids) !== JSON.stringify(g.ids)) throw new Error(`line ${i + 1}: --no-special ids differ`);
      if (s[i].text !== g.decoded) throw new Error(`line ${i + 1}: decoded text differs`);
    });' "$fixtures/goldens/$name.json" "$work/$name.special.jsonl" "$work/$name.plain.jsonl"
  echo "ok: $name ids and decoded text equal Hugging Face's"
done
echo '{"messages": [{"role": "user", "content": "hi"}]}' > "$work/chat.jsonl"
if "$dpo" tokenize --tokenizer "$cache/llama3" "$work/chat.jsonl" 2> "$work/err"; then echo "a chat line was accepted"; exit 1; fi
grep -q "chat.jsonl:1: chat lines need the chat template" "$work/err" || { cat "$work/err"; exit 1; }
echo '{"prompt": "x"}' > "$work/bad.jsonl"
if "$dpo" tokenize --tokenizer "$cache/llama3" "$work/bad.jsonl" 2> "$work/err"; then echo "an object line was accepted"; exit 1; fi
grep -q 'bad.jsonl:1: a line must be a JSON string' "$work/err" || { cat "$work/err"; exit 1; }
echo "ok: chat and malformed lines refused naming the line"
