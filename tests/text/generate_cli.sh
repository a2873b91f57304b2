#!/usr/bin/env bash
# `dpo generate` on a tiny Llama with the real Llama-3 tokenizer (vocab 128256): greedy --prompt
# output is the decoded greedy ids; --chat prints one {"completion", "ids", "finish_reason"} line
# per input line; generation_config.json's eos_token_id and tokenizer_config.json's eos_token stop
# generation (an empty completion, finish reason "stop"); bad lines, a tokenizer of another
# vocabulary and too many new tokens are refused by name.
# usage: generate_cli.sh DPO CACHE
set -euo pipefail
dpo=$1 cache=${DPO_TOKENIZER_CACHE:-$2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -s "$cache/llama3/tokenizer.json" ]] || { echo "missing $cache/llama3: run scripts/fetch_tokenizers.sh"; exit 1; }
model=$work/model
"$dpo" init-model --arch llama --out "$model" --seed 3 --set vocab_size=128256 --set hidden_size=32 \
  --set intermediate_size=64 --set num_attention_heads=2 --set num_key_value_heads=1 --set max_position_embeddings=64 >/dev/null
cp "$cache/llama3/tokenizer.json" "$cache/llama3/tokenizer_config.json" "$model/"
# A second tokenizer directory whose chat template renders a one-message chat as its text: the ids
# of --prompt with the tokenizer's special tokens (this Llama-3 tokenizer.json's post-processor adds
# no BOS, as Hugging Face's goldens show; checked below with dpo tokenize).
plain=$work/plain-template
mkdir "$plain"
cp "$cache/llama3/tokenizer.json" "$plain/"
python3 - "$cache/llama3/tokenizer_config.json" "$plain/tokenizer_config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
json.dump(config, open(sys.argv[2], "w"))
PY
# Hugging Face's ByteLevel decoding of ids, special tokens skipped, written independently of dpo.
cat > "$work/decode.py" <<'PY'
import json, sys
def decoder(tokenizer_json):
    spec = json.load(open(tokenizer_json))
    vocab = {i: t for t, i in spec["model"]["vocab"].items()}
    added = {a["id"]: a for a in spec["added_tokens"]}
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    byte_of = {chr(c): b for b, c in zip(bs, cs)}
    def decode(ids):
        out = b""
        for i in ids:
            if i in added:
                out += b"" if added[i]["special"] else added[i]["content"].encode()
            else:
                out += bytes(byte_of[c] for c in vocab[i])
        return out.decode("utf-8", errors="replace")
    return decode
PY

printf '%s\n' '{"messages": [{"role": "user", "content": "Hello"}]}' > "$work/hello.jsonl"
echo '"Hello"' > "$work/hello.txt"
"$dpo" tokenize --tokenizer "$model" "$work/hello.txt" > "$work/prompt.ids"
"$dpo" tokenize --tokenizer "$plain" "$work/hello.jsonl" | python3 -c 'import json, sys; print(json.dumps({"ids": json.load(sys.stdin)["ids"]}, separators=(",", ":")))' > "$work/chat.ids"
cmp -s "$work/prompt.ids" "$work/chat.ids" || { echo "the chat line's ids differ from --prompt's:"; cat "$work/prompt.ids" "$work/chat.ids"; exit 1; }
"$dpo" generate --model "$model" --tokenizer "$plain" --chat "$work/hello.jsonl" --max-new-tokens 5 --temperature 0 > "$work/hello.out"
"$dpo" generate --model "$model" --prompt "Hello" --max-new-tokens 5 --temperature 0 --seed 9 > "$work/prompt.out"
"$dpo" generate --model "$model" --tokenizer "$plain" --chat "$work/hello.jsonl" --max-new-tokens 3 --temperature 0 > "$work/hello3.out"
python3 - "$work" "$model/tokenizer.json" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1]); from decode import decoder
decode = decoder(sys.argv[2])
[five] = [json.loads(l) for l in open(sys.argv[1] + "/hello.out")]
[three] = [json.loads(l) for l in open(sys.argv[1] + "/hello3.out")]
if len(five["ids"]) != 5 or five["finish_reason"] != "length": sys.exit(f"5 greedy tokens expected: {five}")
if three["ids"] != five["ids"][:3] or three["finish_reason"] != "length": sys.exit("greedy runs of 3 and 5 tokens disagree")
if five["completion"] != decode(five["ids"]): sys.exit("the chat completion is not the decoded ids")
printed = open(sys.argv[1] + "/prompt.out", encoding="utf-8", errors="replace").read()
if printed != decode(five["ids"]) + "\n": sys.exit(f"--prompt printed {printed!r}, not the decoded greedy ids")
open(sys.argv[1] + "/first_id", "w").write(str(five["ids"][0]))
print("ok: greedy --prompt prints the decoded greedy ids:", repr(printed))
PY
first=$(cat "$work/first_id")

# Two conversations through Llama-3's own chat template: two JSON lines.
printf '%s\n' '{"messages": [{"role": "user", "content": "Hi there"}]}' \
  '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]}' > "$work/chat.jsonl"
"$dpo" generate --model "$model" --chat "$work/chat.jsonl" --max-new-tokens 4 --top-p 0.9 --seed 1 > "$work/chat.out"
python3 - "$work" "$model/tokenizer.json" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1]); from decode import decoder
decode = decoder(sys.argv[2])
lines = [json.loads(l) for l in open(sys.argv[1] + "/chat.out")]
if len(lines) != 2: sys.exit(f"2 output lines expected, got {len(lines)}")
for line in lines:
    if set(line) != {"completion", "ids", "finish_reason"}: sys.exit(f"unexpected keys: {line}")
    if line["finish_reason"] not in ("stop", "length") or len(line["ids"]) > 4: sys.exit(f"bad line {line}")
    if line["completion"] != decode(line["ids"]): sys.exit("a chat completion is not its decoded ids")
print("ok: 2 chat lines, 2 JSON lines with finish_reason")
PY

# generation_config.json's eos_token_id (a list here) as the greedy first token: nothing generated.
echo "{\"eos_token_id\": [128001, $first]}" > "$model/generation_config.json"
"$dpo" generate --model "$model" --tokenizer "$plain" --chat "$work/hello.jsonl" --max-new-tokens 5 --temperature 0 > "$work/stop.out"
grep -qx '{"completion":"","finish_reason":"stop","ids":\[\]}' "$work/stop.out" || { cat "$work/stop.out"; exit 1; }
[[ "$("$dpo" generate --model "$model" --prompt "Hello" --max-new-tokens 5 --temperature 0)" == "" ]] || { echo "--prompt did not stop"; exit 1; }
rm "$model/generation_config.json"
# tokenizer_config.json's eos_token (an AddedToken object) as that token: the same.
python3 - "$plain/tokenizer_config.json" "$model/tokenizer.json" "$first" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
vocab = {i: t for t, i in json.load(open(sys.argv[2]))["model"]["vocab"].items()}
config["eos_token"] = {"content": vocab[int(sys.argv[3])], "special": True}
json.dump(config, open(sys.argv[1], "w"))
PY
"$dpo" generate --model "$model" --tokenizer "$plain" --chat "$work/hello.jsonl" --max-new-tokens 5 --temperature 0 > "$work/stop.out"
grep -qx '{"completion":"","finish_reason":"stop","ids":\[\]}' "$work/stop.out" || { cat "$work/stop.out"; exit 1; }
echo "ok: generation_config.json's eos_token_id and tokenizer_config.json's eos_token stop generation"

expect_error() {  # expect_error PATTERN ARGS...: dpo generate fails with PATTERN on stderr
  local pattern=$1; shift
  if "$dpo" generate "$@" > /dev/null 2> "$work/err"; then echo "accepted: $*"; exit 1; fi
  grep -q -- "$pattern" "$work/err" || { echo "expected '$pattern', got:"; cat "$work/err"; exit 1; }
}
printf '%s\n' '{"messages": [{"role": "user", "content": "Hi"}]}' '{"prompt": "x"}' > "$work/bad.jsonl"
expect_error 'bad.jsonl:2: a line must be an object with "messages"' --model "$model" --chat "$work/bad.jsonl"
printf '%s\n' '{"messages": "Hi"}' > "$work/bad.jsonl"
expect_error 'bad.jsonl:1: "messages" must be a list' --model "$model" --chat "$work/bad.jsonl"
printf '%s\n' '{"messages": [}' > "$work/bad.jsonl"
expect_error 'bad.jsonl:1' --model "$model" --chat "$work/bad.jsonl"
expect_error 'max_position_embeddings 64' --model "$model" --prompt "Hello" --max-new-tokens 64
expect_error '--top-p: expected a number in (0, 1]' --model "$model" --prompt "Hello" --top-p 1.5
expect_error 'exactly one of --prompt and --chat' --model "$model"
small=$work/small
"$dpo" init-model --arch llama --out "$small" --set hidden_size=32 --set intermediate_size=64 >/dev/null
expect_error "tokenizer $cache/llama3 has vocab 128256 but model $small has vocab_size 256" --model "$small" --tokenizer "$cache/llama3" --prompt "Hello"
echo "ok: bad lines, flags and a tokenizer of another vocabulary refused by name"
