#!/usr/bin/env bash
# Regenerates tests/fixtures/text_preferences/goldens/: what TRL's rules give for the four text
# preference fixtures (standard/conversational, explicit/implicit prompt), computed with Hugging
# Face's own tokenizers (the Rust library's node binding) and @huggingface/jinja on the real
# tokenizer files (scripts/fetch_tokenizers.sh), by scripts/tokenizers/make_text_preference_goldens.js.
# One goldens/<tokenizer>.<file>.jsonl per pair of tokenizer and file (prompt_input_ids,
# chosen_input_ids, rejected_input_ids per kept pair) and goldens/summary.json (pairs, boundary
# mismatches and the fixture lines that are mismatches, for each). tests/data/prepare_data_cli.py
# compares `dpo prepare-data` with them. Versions are pinned, so the output changes only when this script does. Needs
# node and npm (the npm registry); installs into a temporary directory and commits no node_modules.
#
# Usage: scripts/make_text_preference_goldens.sh [TOKENIZER_CACHE]   (default build/tokenizers, or
# $DPO_TOKENIZER_CACHE; tokenizers missing there are fetched)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-${DPO_TOKENIZER_CACHE:-$root/build/tokenizers}}
bash "$root/scripts/fetch_tokenizers.sh" "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hf=$(node -e 'console.log(require(process.argv[1]).hf_tokenizers)' "$root/scripts/tokenizers/tokenizer_sources.json")
(cd "$work" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "$hf" @huggingface/jinja@0.5.13 >/dev/null)
fixtures="$root/tests/fixtures/text_preferences"
node "$root/scripts/tokenizers/make_text_preference_goldens.js" "$work/node_modules" "$cache" "$fixtures" "$work/rendered.jsonl"

# transformers renders chat templates with Python's Jinja2, not @huggingface/jinja: where Jinja2 is
# installed (Debian: python3-jinja2), check that it renders every text the goldens used the same,
# with transformers' settings (as scripts/make_chat_template_goldens.sh does).
if python3 -c "import jinja2" 2>/dev/null; then
  PYTHONPATH="$root/scripts/tokenizers" python3 - "$cache" "$work/rendered.jsonl" <<'PY'
import json, sys
import jinja2
import transformers_jinja

env = transformers_jinja.environment()
cache, rendered = sys.argv[1], [json.loads(l) for l in open(sys.argv[2], encoding="utf-8") if l.strip()]
templates, context = {}, {}
differ = 0
for r in rendered:
    name = r["tokenizer"]
    if name not in templates:
        config = json.load(open(f"{cache}/{name}/tokenizer_config.json", encoding="utf-8"))
        templates[name] = env.from_string(config["chat_template"])
        tokens = {key: config.get(key) for key in ("bos_token", "eos_token")}
        tokens = {key: value["content"] if isinstance(value, dict) else value for key, value in tokens.items()}
        context[name] = {key: value for key, value in tokens.items() if isinstance(value, str)}
    text = templates[name].render(**context[name], messages=r["messages"], add_generation_prompt=r["add_generation_prompt"])
    if text != r["text"]:
        differ += 1
        print(f"Jinja2 differs: {name} {json.dumps(r['messages'], ensure_ascii=False)[:120]} add_generation_prompt={r['add_generation_prompt']}")
print(f"Python Jinja2 {jinja2.__version__} renders {len(rendered) - differ} of {len(rendered)} chat texts as @huggingface/jinja")
sys.exit(1 if differ else 0)
PY
fi
