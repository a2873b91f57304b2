#!/usr/bin/env python3
"""Eager PyTorch DPO training step: the comparison partner of `dpo bench`.

For the issue "Speed: twice an eager PyTorch DPO step" we need the speed of a plain eager PyTorch
DPO step on the same CPU and the same shapes as `dpo bench` (see scripts/bench_shapes.sh). This
script builds a randomly initialised decoder-only model (normal std 0.02, seeded) and times full
training steps, each done as the DPO paper's reference code does one:

  one forward of the concatenated chosen + rejected rows (2 * pairs rows of prompt + response, the
  prompt identical in a chosen row and its rejected row), logits over all positions cast to float32
  -> log_softmax -> gather of the next token -> sum over the response tokens (_get_batch_logps),
  the sigmoid DPO loss (beta 0.1) against precomputed reference log-probs (constant zeros here),
  backward, clip_grad_norm_ (max 10), RMSprop step (lr 1e-6), zero_grad(set_to_none=True).

Attention is the eager path of transformers (q k^T / sqrt(D), causal mask, softmax, @ v); --sdpa
uses torch.nn.functional.scaled_dot_product_attention where this torch has it. bf16-mixed runs the
forward and the loss under torch.autocast("cpu", bfloat16) with fp32 master weights, as HF Trainer
does with bf16=True on a CPU. tokens_per_step counts 2 * pairs * (prompt + response), the count
`dpo bench` uses. Only torch is needed (Debian 12: apt-get install python3-torch).

Usage: eager_dpo_step.py --shape b|c|d [--precision fp32|bf16-mixed] [--pairs N] [--prompt-len N]
       [--response-len N] [--warmup N] [--steps N] [--threads N] [--sdpa]
Prints one JSON line.
"""
import argparse
import json
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {
    "b": dict(arch="gpt2", n_layer=4, n_head=8, n_kv_head=8, d=256, ffn=1024, vocab=8192,
              pairs=8, prompt=128, response=128),
    "c": dict(arch="gpt2", n_layer=12, n_head=12, n_kv_head=12, d=768, ffn=3072, vocab=50304,
              pairs=2, prompt=256, response=256),
    "d": dict(arch="llama", n_layer=4, n_head=8, n_kv_head=4, d=256, ffn=768, vocab=8192,
              pairs=8, prompt=128, response=128),
}
USE_SDPA = False


def attention(q, k, v):
    """Causal attention on [B, H, T, D] tensors (k, v already expanded to H heads)."""
    if USE_SDPA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    return probs @ v


class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head = c["n_head"]
        self.ln_1 = nn.LayerNorm(c["d"])
        self.c_attn = nn.Linear(c["d"], 3 * c["d"])
        self.attn_proj = nn.Linear(c["d"], c["d"])
        self.ln_2 = nn.LayerNorm(c["d"])
        self.c_fc = nn.Linear(c["d"], c["ffn"])
        self.mlp_proj = nn.Linear(c["ffn"], c["d"])

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, -1).transpose(1, 2) for z in (q, k, v))
        y = attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LlamaBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.n_head, self.n_kv = c["d"], c["n_head"], c["n_kv_head"]
        self.hd = d // self.n_head
        self.input_layernorm = RMSNorm(d)
        self.q_proj = nn.Linear(d, self.n_head * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.hd, d, bias=False)
        self.post_attention_layernorm = RMSNorm(d)
        self.gate_proj = nn.Linear(d, c["ffn"], bias=False)
        self.up_proj = nn.Linear(d, c["ffn"], bias=False)
        self.down_proj = nn.Linear(c["ffn"], d, bias=False)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, t, self.n_head, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.n_kv, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.n_kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.n_head // self.n_kv  # grouped-query attention: each kv head serves `group` heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        y = attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.o_proj(y)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class DecoderLM(nn.Module):
    """GPT-2 (learned positions, LayerNorm) or Llama (RoPE, RMSNorm); the head is tied to wte."""

    def __init__(self, c, max_len):
        super().__init__()
        self.arch = c["arch"]
        self.wte = nn.Embedding(c["vocab"], c["d"])
        if self.arch == "gpt2":
            self.wpe = nn.Embedding(max(1024, max_len), c["d"])
            self.blocks = nn.ModuleList(GPT2Block(c) for _ in range(c["n_layer"]))
            self.norm_f = nn.LayerNorm(c["d"])
        else:
            hd = c["d"] // c["n_head"]
            inv_freq = 1.0 / 10000.0 ** (torch.arange(0, hd, 2).float() / hd)
            freqs = torch.outer(torch.arange(max_len).float(), inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            self.register_buffer("cos", emb.cos(), persistent=False)
            self.register_buffer("sin", emb.sin(), persistent=False)
            self.blocks = nn.ModuleList(LlamaBlock(c) for _ in range(c["n_layer"]))
            self.norm_f = RMSNorm(c["d"])
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.wte(ids)
        if self.arch == "gpt2":
            x = x + self.wpe(torch.arange(t, device=ids.device))
            for blk in self.blocks:
                x = blk(x)
        else:
            cos, sin = self.cos[:t], self.sin[:t]
            for blk in self.blocks:
                x = blk(x, cos, sin)
        return F.linear(self.norm_f(x), self.wte.weight)  # tied head: logits at every position


def make_batch(vocab, pairs, prompt_len, response_len, gen):
    """Concatenated rows: chosen 0..pairs-1, then rejected 0..pairs-1; labels -100 on the prompt."""
    prompt = torch.randint(vocab, (pairs, prompt_len), generator=gen)
    chosen = torch.randint(vocab, (pairs, response_len), generator=gen)
    rejected = torch.randint(vocab, (pairs, response_len), generator=gen)
    ids = torch.cat([torch.cat([prompt, chosen], 1), torch.cat([prompt, rejected], 1)], 0)
    labels = ids.clone()
    labels[:, :prompt_len] = -100
    return ids, labels


def batch_logps(logits, labels):
    """Sum of the log-probs of the response tokens per row (the paper's _get_batch_logps)."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    mask = labels != -100
    labels[~mask] = 0
    per_token = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return (per_token * mask).sum(-1)


def policy_logps(model, ids, labels):
    logps = batch_logps(model(ids).to(torch.float32), labels)
    n = ids.shape[0] // 2
    return logps[:n], logps[n:]


def dpo_loss(pc, pr, rc, rr, beta=0.1):
    logits = (pc - pr) - (rc - rr)
    return -F.logsigmoid(beta * logits).mean()


def train_step(model, opt, ids, labels, ref_c, ref_r, precision):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        pc, pr = policy_logps(model, ids, labels)
        loss = dpo_loss(pc, pr, ref_c, ref_r)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def main():
    global USE_SDPA
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="b")
    ap.add_argument("--precision", choices=["fp32", "bf16-mixed"], default="fp32")
    ap.add_argument("--pairs", type=int)
    ap.add_argument("--prompt-len", type=int)
    ap.add_argument("--response-len", type=int)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--sdpa", action="store_true", help="scaled_dot_product_attention if available")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    USE_SDPA = a.sdpa and hasattr(F, "scaled_dot_product_attention")
    c = SHAPES[a.shape]
    pairs = c["pairs"] if a.pairs is None else a.pairs
    prompt_len = c["prompt"] if a.prompt_len is None else a.prompt_len
    response_len = c["response"] if a.response_len is None else a.response_len

    torch.manual_seed(a.seed)
    model = DecoderLM(c, prompt_len + response_len).train()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-6)
    gen = torch.Generator().manual_seed(a.seed)
    ids, labels = make_batch(c["vocab"], pairs, prompt_len, response_len, gen)
    ref_c = ref_r = torch.zeros(pairs)  # precomputed reference log-probs

    for _ in range(a.warmup):
        train_step(model, opt, ids, labels, ref_c, ref_r, a.precision)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        train_step(model, opt, ids, labels, ref_c, ref_r, a.precision)
    step_s = (time.perf_counter() - t0) / max(a.steps, 1)

    tokens = 2 * pairs * (prompt_len + response_len)
    print(json.dumps({
        "shape": a.shape, "precision": a.precision, "tokens_per_s": round(tokens / step_s, 1),
        "step_s": round(step_s, 4), "tokens_per_step": tokens,
        "params": sum(p.numel() for p in model.parameters()), "threads": a.threads,
        "torch": torch.__version__, "attention": "sdpa" if USE_SDPA else "eager",
        # Peak resident set of the process (Linux reports KiB), as dpo bench's "peak memory".
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
