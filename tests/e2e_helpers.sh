# Sourced by the end-to-end test scripts: check bookkeeping and tiny inputs.
failures=0
pass() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; failures=$((failures + 1)); }

# make_tiny_inputs DPO DIR TRAIN_PAIRS: a synthetic preference dataset (DIR/data/{train,eval}.jsonl)
# and a tiny random Llama (DIR/model).
make_tiny_inputs() {
  "$1" make-demo-data --out "$2/data" --train-pairs "$3" --eval-pairs 16 --vocab-size 64 >/dev/null
  "$1" init-model --arch llama --out "$2/model" --set vocab_size=64 --set hidden_size=32 --set intermediate_size=64 \
    --set num_attention_heads=4 --set num_key_value_heads=2 >/dev/null
}

# same_steps A B TOLERANCE: the loss, grad_norm, margins and chosen rewards of every step of two
# runs' metrics.jsonl agree (not the accuracies: a margin of 0 at step 1 may round either way
# between two equal computations).
same_steps() {
  python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p) if '"loss"' in l and '"eval_loss"' not in l] for p in sys.argv[1:3])
tol = float(sys.argv[3])
assert len(a) == len(b) and a, f"{len(a)} vs {len(b)} steps"
for x, y in zip(a, b):
    for k in ("loss", "grad_norm", "rewards/margins", "rewards/chosen"):
        assert abs(x[k] - y[k]) <= tol * max(1.0, abs(x[k])), f"step {x['step']} {k}: {x[k]} vs {y[k]}"
PY
}
