#!/usr/bin/env python3
"""Log-probs of a dpo-saved model by transformers against dpo's own (scripts/device_check.sh).

Usage: compare_with_transformers.py MODEL_DIR PAIRS.jsonl REFERENCE.h5 [--device cuda] [--max-length N]

MODEL_DIR is a Hugging Face directory that dpo wrote; PAIRS.jsonl pre-tokenized pairs (TRL's
prompt_input_ids / chosen_input_ids / rejected_input_ids, no truncation needed: every pair must
fit max_length); REFERENCE.h5 what `dpo precompute-ref` wrote for them with MODEL_DIR as the
reference, in float32. The log-prob of a response is the sum over its tokens of
log p(token | prompt, earlier response tokens), as in the DPO paper's code. Prints the largest
differences and exits 1 when they exceed float32 rounding (1e-4 relative + 1e-3 absolute on sums
of up to a few hundred token log-probs).
"""
import argparse
import json
import sys

import h5py
import torch
from transformers import AutoModelForCausalLM


def response_logps(model, prompt, response, device):
    ids = torch.tensor([prompt + response], device=device)
    with torch.no_grad():
        logits = model(ids).logits.float()
    logprobs = torch.log_softmax(logits[0, :-1], dim=-1)
    targets = ids[0, 1:]
    token = logprobs.gather(1, targets.unsqueeze(1)).squeeze(1)
    # Token t >= 1 is scored from the logits at t - 1 (with no prompt the first token has none).
    start = max(len(prompt) - 1, 0)
    return token[start:].sum().item(), len(prompt + response) - 1 - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("pairs")
    parser.add_argument("reference")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products, as dpo's
    # .float() rather than a dtype argument, whose name changed between transformers 4 and 5.
    model = AutoModelForCausalLM.from_pretrained(args.model_dir).float().to(args.device).eval()
    with h5py.File(args.reference, "r") as ref:
        want = {side: ref[f"{side}_logps"][:] for side in ("chosen", "rejected")}
        want_lengths = {side: ref[f"{side}_lengths"][:] for side in ("chosen", "rejected")}
    worst_abs = worst_rel = 0.0
    failures = 0
    pairs = [json.loads(line) for line in open(args.pairs) if line.strip()]
    for i, pair in enumerate(pairs):
        for side in ("chosen", "rejected"):
            response = pair[f"{side}_input_ids"]
            if len(pair["prompt_input_ids"]) + len(response) > args.max_length:
                sys.exit(f"pair {i} is longer than --max-length {args.max_length}: pick pairs that need no truncation")
            got, length = response_logps(model, pair["prompt_input_ids"], response, args.device)
            expected = float(want[side][i])
            if length != int(want_lengths[side][i]):
                print(f"pair {i} {side}: {length} tokens here, {int(want_lengths[side][i])} in {args.reference}")
                failures += 1
            difference = abs(got - expected)
            worst_abs = max(worst_abs, difference)
            worst_rel = max(worst_rel, difference / max(abs(expected), 1e-6))
            if difference > 1e-3 + 1e-4 * abs(expected):
                failures += 1
                if failures <= 5:
                    print(f"pair {i} {side}: transformers {got:.6f}, dpo {expected:.6f}")
    print(f"transformers vs dpo log-probs over {len(pairs)} pairs: max abs diff {worst_abs:.3e}, "
          f"max rel diff {worst_rel:.3e}, {failures} outside float32 rounding")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
