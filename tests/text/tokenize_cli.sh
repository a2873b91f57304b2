#!/usr/bin/env bash
# `dpo tokenize` prints Hugging Face tokenizers' ids (the committed goldens) for every corpus line,
# with and without special tokens, the decoded text under --decode; chat lines rendered with the
# chat template and tokenized; malformed lines refused naming the line.
# usage: tokenize_cli.sh DPO FIXTURES CACHE CHAT_FIXTURES
set -euo pipefail
dpo=$1 fixtures=$2 cache=${DPO_TOKENIZER_CACHE:-$3} chat_fixtures=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -s "$cache/llama3/tokenizer.json" ]] || { echo "missing $cache/llama3: run scripts/fetch_tokenizers.sh"; exit 1; }
for name in llama3 llama2; do
  "$dpo" tokenize --tokenizer "$cache/$name" --decode "$fixtures/corpus.jsonl" > "$work/$name.special.jsonl"
  "$dpo" tokenize --tokenizer "$cache/$name/tokenizer.json" --no-special "$fixtures/corpus.jsonl" > "$work/$name.plain.jsonl"
  python3 - "$fixtures/goldens/$name.json" "$work/$name.special.jsonl" "$work/$name.plain.jsonl" <<'PY'
import json, sys
lines = json.load(open(sys.argv[1]))["lines"]
special, plain = ([json.loads(l) for l in open(f) if l.strip()] for f in sys.argv[2:4])
if len(special) != len(lines) or len(plain) != len(lines): sys.exit("one output line per input line")
for i, g in enumerate(lines, 1):
    if special[i - 1]["ids"] != g["ids_with_special"]: sys.exit(f"line {i}: ids differ")
    if plain[i - 1]["ids"] != g["ids"]: sys.exit(f"line {i}: --no-special ids differ")
    if special[i - 1]["text"] != g["decoded"]: sys.exit(f"line {i}: decoded text differs")
PY
  echo "ok: $name ids and decoded text equal Hugging Face's"
done
# Chat lines: rendered with the directory's chat template (@huggingface/jinja's goldens) and
# tokenized without special tokens, i.e. the ids of the rendered text as a plain line.
mkdir "$work/llama3-chat"
cp "$cache/llama3/tokenizer.json" "$work/llama3-chat/"
cp "$chat_fixtures/llama3.tokenizer_config.json" "$work/llama3-chat/tokenizer_config.json"
python3 - "$chat_fixtures/goldens.jsonl" "$work/chat.jsonl" "$work/chat.expected" <<'PY'
import json, sys
goldens = [g for g in map(json.loads, open(sys.argv[1])) if g["model"] == "llama3"]
with open(sys.argv[2], "w") as chat, open(sys.argv[3], "w") as expected:
    for g in goldens:
        chat.write(json.dumps({"messages": g["messages"], "add_generation_prompt": g["add_generation_prompt"], **g["extra"]}) + "\n")
        expected.write(json.dumps(g["text"]) + "\n")
PY
"$dpo" tokenize --tokenizer "$work/llama3-chat" "$work/chat.jsonl" > "$work/chat.out"
"$dpo" tokenize --tokenizer "$work/llama3-chat" --no-special "$work/chat.expected" > "$work/chat.plain"
python3 - "$work/chat.out" "$work/chat.expected" "$work/chat.plain" <<'PY'
import json, sys
out, expected, plain = ([json.loads(l) for l in open(f) if l.strip()] for f in sys.argv[1:4])
if not out or len(out) != len(expected): sys.exit("one output line per chat line")
for i, (o, text, p) in enumerate(zip(out, expected, plain), 1):
    if o["text"] != text: sys.exit(f"chat line {i}: rendered text differs from @huggingface/jinja's")
    if o["ids"] != p["ids"]: sys.exit(f"chat line {i}: ids are not those of the rendered text without special tokens")
print(f"ok: {len(out)} chat lines rendered as @huggingface/jinja and tokenized without special tokens")
PY
echo '{"messages": "hi"}' > "$work/chat-bad.jsonl"
if "$dpo" tokenize --tokenizer "$work/llama3-chat" "$work/chat-bad.jsonl" 2> "$work/err"; then echo "a malformed chat line was accepted"; exit 1; fi
grep -q 'chat-bad.jsonl:1: "messages" must be a list' "$work/err" || { cat "$work/err"; exit 1; }
echo '{"prompt": "x"}' > "$work/bad.jsonl"
if "$dpo" tokenize --tokenizer "$cache/llama3" "$work/bad.jsonl" 2> "$work/err"; then echo "an object line was accepted"; exit 1; fi
grep -q 'bad.jsonl:1: a line must be a JSON string' "$work/err" || { cat "$work/err"; exit 1; }
echo "ok: malformed lines refused naming the line"
