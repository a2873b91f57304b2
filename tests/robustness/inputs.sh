#!/usr/bin/env bash
# Hostile and malformed input never crashes, hangs or allocates absurdly: the dpo binary is run on
# a battery of broken files (JSON nested 100k deep, absurd sizes, malformed JSONL / HDF5 /
# safetensors / YAML, --set abuse), and every case must exit 1 (not a signal, not an abort) within
# 20 s with exactly one stderr line "dpo: error: ..." naming the file, line, key, dataset or tensor,
# and leave no output behind. A few cases check that tolerable input (UTF-8 BOM on line 1, CRLF) is
# accepted. Usage: inputs.sh DPO HOSTILE_HDF5
set -uo pipefail
dpo=$1
hostile_hdf5=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../e2e_helpers.sh"
passed=0

# refused NAME PATTERN "OUTPUTS" CMD...: CMD must be refused as described above; OUTPUTS (space-
# separated paths) must not exist afterwards, nor any temporary file under $work.
refused() {
  local name=$1 pattern=$2 outputs=$3 why="" rc
  shift 3
  local start=$(date +%s%N)
  timeout 20 "$@" >"$work/out.txt" 2>"$work/err.txt"
  rc=$?
  local seconds=$(( ($(date +%s%N) - start) / 1000000 ))
  if [ "$rc" -eq 124 ]; then why="hung (killed after 20 s)"
  elif [ "$rc" -ne 1 ]; then why="exit code $rc"
  elif [ "$(wc -l <"$work/err.txt")" -ne 1 ]; then why="stderr has $(wc -l <"$work/err.txt") lines"
  elif [ "$(head -c 12 "$work/err.txt")" != "dpo: error: " ]; then why="stderr does not start with 'dpo: error: '"
  elif ! grep -qE -- "$pattern" "$work/err.txt"; then why="stderr does not match /$pattern/"
  fi
  local path
  for path in $outputs; do
    [ -z "$why" ] && [ -e "$path" ] && why="left $path behind"
  done
  [ -z "$why" ] && find "$work" -name '*.tmp-*' | grep -q . && why="left a temporary file: $(find "$work" -name '*.tmp-*' | head -1)"
  if [ -z "$why" ]; then
    pass "$name ($seconds ms)"
    passed=$((passed + 1))
  else
    bad "$name: $why; stderr: $(head -c 400 "$work/err.txt")"
  fi
  find "$work" -name '*.tmp-*' -exec rm -rf {} + 2>/dev/null
}
# accepted NAME CMD...: tolerable input that must succeed.
accepted() {
  local name=$1
  shift
  if timeout 20 "$@" >"$work/out.txt" 2>"$work/err.txt"; then pass "$name"; passed=$((passed + 1))
  else bad "$name: exit $?; stderr: $(head -c 400 "$work/err.txt")"; fi
}

make_tiny_inputs "$dpo" "$work" 64
train_data=$work/data/train.jsonl
cat >"$work/run.yaml" <<YAML
run: {output_dir: $work/run}
model: {policy: $work/model}
data: {train: $train_data, eval: $work/data/eval.jsonl, max_length: 64, max_prompt_length: 32}
train: {global_batch_size: 8, micro_batch_size: 4, max_steps: 1, warmup_steps: 0}
YAML
runs=0
# next_run: a fresh output directory name in $run; run_outputs: what a run must not leave on error.
next_run() { runs=$((runs + 1)); run=$work/runs/$runs; }
run_outputs() { echo "$1/metrics.jsonl $1/eval_metrics.json $1/checkpoints"; }
# train_refused NAME PATTERN --set...: dpo train with the base config and these overrides.
train_refused() {
  local name=$1 pattern=$2
  shift 2
  next_run
  refused "$name" "$pattern" "$(run_outputs "$run")" "$dpo" train --config "$work/run.yaml" --set run.output_dir="$run" "$@"
}
eval_refused() {
  local name=$1 pattern=$2
  shift 2
  next_run
  refused "$name" "$pattern" "$(run_outputs "$run")" "$dpo" eval --config "$work/run.yaml" --set run.output_dir="$run" "$@"
}
convert_refused() {  # convert_refused NAME PATTERN INPUT
  refused "$1" "$2" "$work/converted.jsonl" "$dpo" convert-data "$3" "$work/converted.jsonl"
}
deep() { python3 -c "import sys; n=int(sys.argv[1]); print(sys.argv[2] + '['*n + ']'*n + sys.argv[3])" "$@"; }

# --- JSON nested deeper than any real file (a segfault before the depth limit) ------------------
deep 100000 '{"prompt_input_ids": ' ', "chosen_input_ids": [1], "rejected_input_ids": [2]}' >"$work/deep_field.jsonl"
convert_refused "JSONL field nested 100k deep" "deep_field.jsonl:1: JSON nested deeper than 128" "$work/deep_field.jsonl"
{ head -1 "$train_data"; deep 1000000 '{"x": ' '}'; } >"$work/deep_line.jsonl"
train_refused "JSONL line nested 1M deep" "deep_line.jsonl:2: JSON nested deeper" --set data.train="$work/deep_line.jsonl"
mkdir -p "$work/deep_config"
cp "$work/model/model.safetensors" "$work/deep_config/"
python3 -c "import json,sys; c=json.load(open(sys.argv[1])); s=json.dumps(c); print(s[:-1] + ', \"rope_scaling\": ' + '['*200000 + ']'*200000 + '}')" \
  "$work/model/config.json" >"$work/deep_config/config.json"
refused "config.json nested 200k deep" "deep_config/config.json: JSON nested deeper" "" "$dpo" inspect "$work/deep_config"
mkdir -p "$work/deep_index"
cp "$work/model/config.json" "$work/deep_index/"
deep 100000 '{"weight_map": {"a": ' '}}' >"$work/deep_index/model.safetensors.index.json"
refused "safetensors index nested 100k deep" "model.safetensors.index.json: JSON nested deeper" "" "$dpo" inspect "$work/deep_index"
python3 -c "import sys; printf=None; n=10**6; print(': ' * 0 + 'run: ' + '['*n + ']'*n)" >"$work/deep.yaml"
refused "YAML nested 1M deep" "deep.yaml:1:[0-9]+: YAML nested deeper" "" "$dpo" train --config "$work/deep.yaml"
refused "--set key with 5000 dotted parts" "--set: unknown key" "" "$dpo" train --config "$work/run.yaml" \
  --set "$(printf 'a.%.0s' $(seq 5000))b=1"

# --- safetensors headers ------------------------------------------------------------------------
# st_model NAME KIND: a copy of the tiny model whose model.safetensors is broken in one way.
st_model() {
  mkdir -p "$work/st/$1"
  cp "$work/model/config.json" "$work/st/$1/"
  python3 - "$2" "$work/model/model.safetensors" "$work/st/$1/model.safetensors" <<'PY'
import json, struct, sys
kind, src, out = sys.argv[1:]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
names = [k for k in header if k != "__metadata__"]
first, second = names[0], names[1]
text = None
if kind == "truncated_length": raw_out = raw[:5]
elif kind == "length_past_end": raw_out = struct.pack("<Q", len(raw)) + raw[8:]
elif kind == "length_huge": raw_out = struct.pack("<Q", 2**63) + raw[8:]
elif kind == "not_json": text = "{this is not json"
elif kind == "json_array": text = "[1, 2, 3]"
elif kind == "deep": text = '{"a":' + "[" * 100000 + "]" * 100000 + "}"
else:
    e = header[first]
    if kind == "reversed": e["data_offsets"] = e["data_offsets"][::-1]
    elif kind == "out_of_range": e["data_offsets"][1] = len(data) + 4096
    elif kind == "overlap": header[second]["data_offsets"] = [e["data_offsets"][0] + 4, e["data_offsets"][1] + 4]
    elif kind == "shape_overflow": e["shape"] = [2**40, 2**40, 2**40]
    elif kind == "negative_dim": e["shape"] = [-1] + e["shape"][1:]
    elif kind == "float_dim": e["shape"] = [1.5] + e["shape"][1:]
    elif kind == "unknown_dtype": e["dtype"] = "F8_E9"
    elif kind == "size_mismatch": e["shape"] = [e["shape"][0] + 1] + e["shape"][1:]
    elif kind == "metadata_list": header["__metadata__"] = [1]
    elif kind == "entry_not_object": header[first] = 7
    elif kind == "wrong_shape": e["shape"] = e["shape"][::-1] if len(set(e["shape"])) > 1 else [1, e["shape"][0] * e["shape"][-1]]
    elif kind == "int_dtype": e["dtype"] = "I32"
    elif kind == "missing_tensor": del header[first]
    elif kind == "unexpected_tensor": header["model.no_such.weight"] = header.pop(first)
    elif kind == "truncated_data": data = data[: len(data) // 2]
    elif kind == "newline_name": header["evil\nname"] = header.pop(first)
    elif kind == "duplicate_key": pass
    else: sys.exit("unknown kind " + kind)
    text = json.dumps(header)
    if kind == "duplicate_key":  # the same tensor name twice, as raw JSON text
        text = text[:-1] + ', "%s": %s}' % (first, json.dumps(header[first]))
if text is not None:
    body = text.encode()
    raw_out = struct.pack("<Q", len(body)) + body + data
open(out, "wb").write(raw_out)
PY
}
st_inspect_refused() {  # NAME KIND PATTERN: dpo inspect on a model with a broken header
  st_model "$2" "$2"
  refused "safetensors: $1" "$3" "" "$dpo" inspect "$work/st/$2"
}
st_eval_refused() {  # NAME KIND PATTERN: dpo eval loading a model with broken weights
  st_model "$2" "$2"
  eval_refused "safetensors: $1" "$3" --set model.policy="$work/st/$2"
}
st_inspect_refused "file shorter than its length prefix" truncated_length "model.safetensors: too short"
st_inspect_refused "header length past the end" length_past_end "model.safetensors: header size .* runs past the end"
st_inspect_refused "header length 2^63" length_huge "model.safetensors: header size .* runs past the end"
st_inspect_refused "header not JSON" not_json "model.safetensors: header: malformed JSON"
st_inspect_refused "header a JSON array" json_array "model.safetensors: header is not a JSON object"
st_inspect_refused "header nested 100k deep" deep "model.safetensors: header: JSON nested deeper"
st_inspect_refused "reversed data_offsets" reversed "model.safetensors: tensor '.*': data_offsets .* out of range"
st_inspect_refused "data_offsets past the buffer" out_of_range "model.safetensors: tensor '.*': data_offsets .* out of range"
st_inspect_refused "overlapping tensors" overlap "model.safetensors: tensor '.*'"
st_inspect_refused "shape overflowing the byte count" shape_overflow "model.safetensors: tensor '.*': shape .* overflows"
st_inspect_refused "negative dimension" negative_dim "model.safetensors: tensor '.*': shape entries must be non-negative"
st_inspect_refused "fractional dimension" float_dim "model.safetensors: tensor '.*': shape entries must be non-negative"
st_inspect_refused "unknown dtype" unknown_dtype "model.safetensors: tensor '.*': unknown dtype"
st_inspect_refused "shape disagrees with data_offsets" size_mismatch "model.safetensors: tensor '.*': shape .* needs .* bytes"
st_inspect_refused "__metadata__ not an object" metadata_list "model.safetensors: __metadata__ is not an object"
st_inspect_refused "entry not an object" entry_not_object "model.safetensors: tensor '.*': header entry is not an object"
st_inspect_refused "tensor name given twice" duplicate_key "model.safetensors: header: JSON object has the key '.*' twice"
st_inspect_refused "data cut short" truncated_data "model.safetensors: tensor '.*': data_offsets .* out of range"
st_model newline_name "newline_name"
refused "safetensors: a tensor name holding a line break" "model.safetensors: unexpected tensor 'evil\\\\nname'" "" \
  "$dpo" eval --config "$work/run.yaml" --set run.output_dir="$work/runs/newline" --set model.policy="$work/st/newline_name"
st_eval_refused "tensor with the wrong shape for the model" wrong_shape "model.safetensors: tensor '.*' has shape .* but the model expects"
st_eval_refused "integer weights" int_dtype "model.safetensors: tensor '.*' has dtype Int, expected a floating type"
st_eval_refused "a tensor missing" missing_tensor "st/missing_tensor: tensor '.*' is missing from the checkpoint"
st_eval_refused "a tensor the model lacks" unexpected_tensor "model.safetensors: unexpected tensor 'model.no_such.weight'"

# --- config.json sizes and types ----------------------------------------------------------------
# cfg_refused NAME PYTHON_EDIT PATTERN: the tiny model with its config.json edited (c is the dict).
cfg_model() {
  mkdir -p "$work/cfg/$1"
  cp "$work/model/model.safetensors" "$work/cfg/$1/"
  python3 -c "import json,sys; c=json.load(open(sys.argv[1])); exec(sys.argv[2]); open(sys.argv[3],'w').write(c if isinstance(c,str) else json.dumps(c))" \
    "$work/model/config.json" "$2" "$work/cfg/$1/config.json"
}
cfg_cases=0
cfg_refused() {
  cfg_cases=$((cfg_cases + 1))
  cfg_model "$cfg_cases" "$2"
  refused "config.json: $1" "cfg/$cfg_cases/config.json: $3" "" "$dpo" inspect "$work/cfg/$cfg_cases"
}
cfg_refused "vocab_size 1e12" "c['vocab_size']=10**12" "'vocab_size' = 1000000000000 is larger than any real model"
cfg_refused "vocab_size 1e12 as a float" "c['vocab_size']=1e12" "'vocab_size' must be a positive integer"
cfg_refused "vocab_size past uint64" "c='{\"model_type\": \"llama\", \"vocab_size\": 99999999999999999999999}'" "'vocab_size' must be a positive integer"
cfg_refused "hidden_size uint64 max" "c['hidden_size']=2**64-1" "'hidden_size' must be a positive integer"
cfg_refused "hidden_size 0" "c['hidden_size']=0" "'hidden_size' must be a positive integer"
cfg_refused "hidden_size negative" "c['hidden_size']=-64" "'hidden_size' must be a positive integer"
cfg_refused "num_hidden_layers a string" "c['num_hidden_layers']='2'" "'num_hidden_layers' must be a positive integer"
cfg_refused "num_hidden_layers 2^31" "c['num_hidden_layers']=2**31" "'num_hidden_layers' = 2147483648 is larger"
cfg_refused "max_position_embeddings 2^40" "c['max_position_embeddings']=2**40" "'max_position_embeddings' = 1099511627776 is larger"
cfg_refused "intermediate_size 2^40" "c['intermediate_size']=2**40" "'intermediate_size' = 1099511627776 is larger"
cfg_refused "head_dim 2^21" "c['head_dim']=2**21" "'head_dim' = 2097152 is larger"
cfg_refused "sizes whose product is absurd" "c.update(vocab_size=2**24, hidden_size=2**20, num_attention_heads=2**10, num_key_value_heads=2**10)" "the sizes describe a model of"
cfg_refused "kv heads not dividing heads" "c['num_key_value_heads']=3" "'num_attention_heads' \\(4\\) is not a multiple"
cfg_refused "vocab_size missing" "del c['vocab_size']" "required key 'vocab_size' is missing"
cfg_refused "not an object" "c=[1, 2]" "config is not a JSON object"
cfg_refused "empty file" "c=''" "malformed JSON"
cfg_refused "a key given twice" "c=json.dumps(c)[:-1] + ', \"vocab_size\": 64}'" "JSON object has the key 'vocab_size' twice"
# Within every bound yet 256 GiB of embeddings: refused when allocated (or, where the allocation
# is granted lazily, by the first tensor's shape), naming the file, never a crash.
cfg_model big "c.update(vocab_size=2**24, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32)"
eval_refused "config.json: a model larger than memory" "cfg/big/config.json: cannot allocate|model.safetensors: tensor .* has shape" \
  --set model.policy="$work/cfg/big"
mkdir -p "$work/gpt2_positions"
"$dpo" init-model --arch gpt2 --out "$work/gpt2_model" --set vocab_size=64 --set n_embd=32 --set n_head=4 >/dev/null
refused "init-model gpt2 n_positions 2^40" "n_positions' = 1099511627776 is larger" "$work/gpt2_positions/out" \
  "$dpo" init-model --arch gpt2 --out "$work/gpt2_positions/out" --set n_positions=1099511627776
refused "init-model vocab_size 1e12" "'vocab_size' = 1000000000000 is larger" "$work/init_vocab" \
  "$dpo" init-model --arch llama --out "$work/init_vocab" --set vocab_size=1000000000000

# --- YAML and --set -----------------------------------------------------------------------------
int64_max=9223372036854775807
train_refused "global_batch_size int64 max" "train.global_batch_size must be at most" --set train.global_batch_size=$int64_max
train_refused "micro_batch_size int64 max" "train.micro_batch_size must be at most" --set train.micro_batch_size=$int64_max
train_refused "max_length int64 max" "data.max_length must be at most" --set data.max_length=$int64_max
train_refused "epochs int64 max" "train.epochs must be at most" --set train.epochs=$int64_max --set train.max_steps=-1
train_refused "max_steps int64 max" "train.max_steps must be at most" --set train.max_steps=$int64_max
train_refused "warmup_steps int64 max" "train.warmup_steps must be at most" --set train.warmup_steps=$int64_max
train_refused "bucket_mb int64 max" "dist.bucket_mb must be at most" --set dist.bucket_mb=$int64_max
train_refused "global_batch_size past int64" "train.global_batch_size: expected an integer" --set train.global_batch_size=1e30
train_refused "global_batch_size larger than the data" "train.global_batch_size \\(128\\) is larger than the training data \\(64 pairs" \
  --set train.global_batch_size=128 --set train.micro_batch_size=8
train_refused "micro_batch_size not dividing global" "train.global_batch_size" --set train.micro_batch_size=3
train_refused "warmup_steps negative" "train.warmup_steps must be non-negative" --set train.warmup_steps=-1
train_refused "lr nan" "train.lr: expected a float" --set train.lr=nan
train_refused "beta infinite" "loss.beta must be a positive number" --set loss.beta=.inf
train_refused "shuffle not a bool" "train.shuffle: expected true or false" --set train.shuffle=maybe
train_refused "--set without =" "--set 'train.lr': expected key=value" --set train.lr
printf 'run: {output_dir: x}\ntrain: {global_batch_sise: 8}\n' >"$work/unknown_key.yaml"
refused "YAML unknown key" "unknown_key.yaml:2: unknown key 'train.global_batch_sise'" "" "$dpo" train --config "$work/unknown_key.yaml"
printf 'run: {output_dir: x\ntrain: [\n' >"$work/unclosed.yaml"
refused "YAML unclosed bracket" "unclosed.yaml:[0-9]+:[0-9]+: YAML parse error" "" "$dpo" train --config "$work/unclosed.yaml"
printf 'run: {output_dir: x}\n"tr\\nain": {lr: 1}\n' >"$work/newline_key.yaml"
refused "YAML section name holding a line break" "newline_key.yaml:2: unknown section 'tr\\\\nain'" "" "$dpo" train --config "$work/newline_key.yaml"
printf -- '- run\n- train\n' >"$work/list.yaml"
refused "YAML a list at the top" "list.yaml:1: the config must be a mapping" "" "$dpo" train --config "$work/list.yaml"
printf 'run: 7\n' >"$work/scalar_section.yaml"
refused "YAML section a scalar" "scalar_section.yaml:1: section 'run' must be a mapping" "" "$dpo" train --config "$work/scalar_section.yaml"
printf 'run: {output_dir: x, seed: {a: 1}}\n' >"$work/map_value.yaml"
refused "YAML value a mapping" "map_value.yaml:1: run.seed: expected a single int value" "" "$dpo" train --config "$work/map_value.yaml"
head -c 4096 /dev/urandom >"$work/binary.yaml"
printf '\0\1\2\3\377\376' >>"$work/binary.yaml"
refused "YAML random bytes" "binary.yaml" "" "$dpo" train --config "$work/binary.yaml"
refused "config file missing" "nowhere.yaml: cannot open config file" "" "$dpo" train --config "$work/nowhere.yaml"
next_run
refused "precompute-ref reference.batch_size 0" "reference.batch_size must be positive" "$work/ref_bs0.h5" \
  "$dpo" precompute-ref --config "$work/run.yaml" --set run.output_dir="$run" --set reference.logps_path="$work/ref_bs0.h5" \
  --set reference.batch_size=0

# --- JSONL preference data ----------------------------------------------------------------------
line1=$(head -1 "$train_data")
jsonl_refused() {  # NAME PATTERN LINE2: a file whose line 2 is LINE2, refused by convert-data
  local file=$work/jsonl_$((++jsonl_cases)).jsonl
  printf '%s\n%s\n' "$line1" "$3" >"$file"
  convert_refused "JSONL: $1" "$(basename "$file"):2: .*$2" "$file"
}
jsonl_cases=0
jsonl_refused "line cut short" "malformed JSON at column" '{"prompt_input_ids": [1, 2'
jsonl_refused "line an array" "expected a JSON object" '[1, 2, 3]'
jsonl_refused "field a string" "field 'prompt_input_ids' is not an array" '{"prompt_input_ids": "1 2", "chosen_input_ids": [3], "rejected_input_ids": [4]}'
jsonl_refused "id a float" "field 'chosen_input_ids' element 0 is not an integer" '{"prompt_input_ids": [1], "chosen_input_ids": [1.5], "rejected_input_ids": [4]}'
jsonl_refused "id a string" "field 'chosen_input_ids' element 1 is not an integer" '{"prompt_input_ids": [1], "chosen_input_ids": [3, "4"], "rejected_input_ids": [4]}'
jsonl_refused "id negative" "id -3 is negative" '{"prompt_input_ids": [1], "chosen_input_ids": [-3], "rejected_input_ids": [4]}'
jsonl_refused "id past int32" "outside the int32 range" '{"prompt_input_ids": [1], "chosen_input_ids": [3000000000], "rejected_input_ids": [4]}'
jsonl_refused "id past uint64" "element 0 is not an integer" '{"prompt_input_ids": [1], "chosen_input_ids": [99999999999999999999999], "rejected_input_ids": [4]}'
jsonl_refused "id 1e400" "malformed JSON" '{"prompt_input_ids": [1], "chosen_input_ids": [1e400], "rejected_input_ids": [4]}'
jsonl_refused "field missing" "field 'rejected_input_ids' is missing" '{"prompt_input_ids": [1], "chosen_input_ids": [3]}'
jsonl_refused "empty response" "field 'chosen_input_ids' is empty" '{"prompt_input_ids": [1], "chosen_input_ids": [], "rejected_input_ids": [4]}'
jsonl_refused "field given twice" "key 'chosen_input_ids' twice" '{"prompt_input_ids": [1], "chosen_input_ids": [3], "chosen_input_ids": [5], "rejected_input_ids": [4]}'
jsonl_refused "byte-order mark on line 2" "byte-order mark in the middle" $'\xef\xbb\xbf{"prompt_input_ids": [1], "chosen_input_ids": [3], "rejected_input_ids": [4]}'
jsonl_refused "invalid UTF-8 in a string" "malformed JSON" $'{"prompt_input_ids": [1], "chosen_input_ids": [3], "rejected_input_ids": [4], "note": "\xff\xfe"}'
jsonl_refused "invalid UTF-8 outside strings" "malformed JSON" $'{"prompt_input_ids": [1], \xc3\x28 "chosen_input_ids": [3], "rejected_input_ids": [4]}'
{ printf '%s\n' "$line1"; printf '{"prompt_input_ids": [1], "chosen_input_ids": [3]\0, "rejected_input_ids": [4]}\n'; } >"$work/nul.jsonl"
convert_refused "JSONL: NUL byte" "nul.jsonl:2: malformed JSON" "$work/nul.jsonl"
big=$work/big_line.jsonl
{ printf '%s\n{"prompt_input_ids": [' "$line1"; head -c $((100 << 20)) /dev/zero | tr '\0' '1'; printf ']}\n'; } >"$big"
convert_refused "JSONL: a 100 MB line" "big_line.jsonl:2: line is longer than 64 MiB" "$big"
rm -f "$big"
: >"$work/empty.jsonl"
convert_refused "JSONL: empty file" "empty.jsonl: no preference records" "$work/empty.jsonl"
printf '\n  \n\r\n' >"$work/blank.jsonl"
convert_refused "JSONL: only blank lines" "blank.jsonl: no preference records" "$work/blank.jsonl"
train_refused "JSONL: id outside the model's vocabulary" "vocab.jsonl:2: field 'rejected_input_ids' element 0: id 64 is outside the vocabulary" \
  --set data.train="$(printf '%s\n%s\n' "$line1" '{"prompt_input_ids": [1], "chosen_input_ids": [3], "rejected_input_ids": [64]}' >"$work/vocab.jsonl"; echo "$work/vocab.jsonl")"
train_refused "data.train a directory" "data" --set data.train="$work/data"
train_refused "data.train missing" "no_such.jsonl: cannot open" --set data.train="$work/no_such.jsonl"
# Tolerated: a UTF-8 BOM opening the file (Python's utf-8-sig) and CRLF line endings.
{ printf '\xef\xbb\xbf'; sed 's/$/\r/' "$train_data"; } >"$work/bom_crlf.jsonl"
accepted "JSONL: BOM on line 1 and CRLF endings are read" "$dpo" convert-data "$work/bom_crlf.jsonl" "$work/bom_crlf_out.jsonl"
cmp -s "$work/bom_crlf_out.jsonl" "$train_data" && { pass "JSONL: BOM + CRLF read as the plain file"; passed=$((passed + 1)); } \
  || bad "JSONL: BOM + CRLF file read differently from the plain file"

# --- HDF5 preference data -----------------------------------------------------------------------
h5_refused() {  # NAME KIND PATTERN
  "$hostile_hdf5" "$2" "$work/$2.h5" || bad "hostile_hdf5 $2"
  convert_refused "HDF5 data: $1" "$2.h5: $3" "$work/$2.h5"
}
h5_refused "float tokens" pref_float_tokens "/chosen/tokens must hold integers"
h5_refused "offsets decreasing" pref_offsets_decreasing "/chosen/offsets decreases at record 1"
h5_refused "offsets not starting at 0" pref_offsets_start "/chosen/offsets\\[0\\] is 1, expected 0"
h5_refused "offsets past the tokens" pref_offsets_past_tokens "/chosen/offsets ends at 30 but /chosen/tokens holds 3"
h5_refused "offsets negative" pref_offsets_negative "/chosen/offsets decreases"
h5_refused "record counts differ" pref_count_mismatch "/chosen/offsets holds 1 records but /prompt/offsets holds 2"
h5_refused "empty response" pref_empty_response "/chosen record 0 is empty"
h5_refused "negative id" pref_negative_id "/chosen/tokens record 1: id -5"
h5_refused "id past int32 in int64 storage" pref_wide_id "/chosen/tokens record 1: id 1099511627776"
h5_refused "offsets empty" pref_empty_offsets "/chosen/offsets is empty"
h5_refused "no records" pref_zero_records "no preference records"
h5_refused "2-D tokens" pref_tokens_2d "/chosen/tokens must be 1-D"
h5_refused "tokens a group" pref_tokens_group "/chosen/tokens is not a dataset"
h5_refused "tokens missing" pref_missing_tokens "dataset /chosen/tokens is missing"
h5_refused "group missing" pref_missing_group "group /rejected is missing"
h5_refused "offsets declaring 2^40 entries" pref_huge_offsets "/chosen/offsets declares 1099511627776 elements"
h5_refused "tokens declaring 2^40 entries" pref_huge_tokens "/chosen/tokens declares 1099511627776 elements"
"$dpo" convert-data "$train_data" "$work/valid.h5" >/dev/null || bad "convert-data to HDF5"
head -c $(($(stat -c %s "$work/valid.h5") / 2)) "$work/valid.h5" >"$work/truncated.h5"
convert_refused "HDF5 data: truncated file" "truncated.h5: cannot open as an HDF5 file" "$work/truncated.h5"
{ printf '\x89HDF\r\n\x1a\n'; head -c 2048 /dev/urandom; } >"$work/fake.h5"
convert_refused "HDF5 data: signature then garbage" "fake.h5: cannot open as an HDF5 file" "$work/fake.h5"
train_refused "HDF5 data: truncated file as data.train" "truncated.h5: cannot open as an HDF5 file" --set data.train="$work/truncated.h5"

# --- reference log-prob files -------------------------------------------------------------------
ref_refused() {  # NAME KIND PATTERN: dpo train with a broken reference.logps_path
  "$hostile_hdf5" "$2" "$work/$2.h5" || bad "hostile_hdf5 $2"
  train_refused "reference file: $1" "$2.h5: .*$3" --set reference.logps_path="$work/$2.h5"
}
ref_refused "NaN log-prob" ref_nan "chosen_logps\\[1\\] is not finite"
ref_refused "infinite log-prob" ref_inf "rejected_logps\\[0\\] is not finite"
ref_refused "zero token count" ref_zero_length "rejected_lengths\\[1\\] is 0"
ref_refused "negative token count" ref_negative_length "chosen_lengths\\[0\\] = -7 is not a token count"
ref_refused "token count past int32" ref_wide_length "chosen_lengths\\[1\\] = 1099511627776 is not a token count"
ref_refused "float token counts" ref_float_lengths "chosen_lengths must hold integers"
ref_refused "datasets of different length" ref_short "datasets of / differ in length"
ref_refused "integer log-probs" ref_int_logps "chosen_logps must hold floats"
ref_refused "log-probs declaring 2^40 entries" ref_huge_logps "chosen_logps declares 1099511627776 elements"
ref_refused "a dataset missing" ref_missing "dataset chosen_logps is missing"
ref_refused "unfilled entries" ref_unfilled "incomplete: 1 of 2"
ref_refused "no format attribute" ref_no_format "not a reference log-prob file"
ref_refused "format version 99" ref_version "log-prob format version 99 is not supported"
train_refused "reference file: not HDF5" "run.yaml: not an HDF5 file" --set reference.logps_path="$work/run.yaml"
train_refused "reference file: truncated" "truncated.h5: cannot open as HDF5" --set reference.logps_path="$work/truncated.h5"
refused "inspect: reference file declaring 2^40 entries" "ref_huge_logps.h5: chosen_logps declares" "" "$dpo" inspect "$work/ref_huge_logps.h5"

# --- resuming from a damaged checkpoint ---------------------------------------------------------
next_run
"$dpo" train --config "$work/run.yaml" --set run.output_dir="$run" >/dev/null 2>&1 || bad "training run to resume from"
state=$(find "$run/checkpoints" -name trainer_state.json | head -1)
if [ -n "$state" ]; then
  resume_refused() {  # NAME PATTERN CONTENT: trainer_state.json replaced by CONTENT
    printf '%s' "$3" >"$state"
    refused "resume: $1" "trainer_state.json: .*$2" "$run/checkpoints/step-2" \
      "$dpo" train --config "$work/run.yaml" --set run.output_dir="$run" --set train.max_steps=2
  }
  resume_refused "trainer state nested 100k deep" "JSON nested deeper" "$(deep 100000 '{"step": ' '}')"
  resume_refused "trainer state not JSON" "malformed JSON" '{"step": 1,'
  resume_refused "trainer state step a string" "step" '{"step": "one"}'
else
  bad "no trainer_state.json after the training run"
fi

echo "robustness inputs: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
