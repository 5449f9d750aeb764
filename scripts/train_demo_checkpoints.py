"""Train the committed demo checkpoints: a tiny Llama that does chained two-digit arithmetic, step by step.

Why our own model: the audit must run on a fresh CPU machine with no hub access, yet exercise the real vLLM engine
on real checkpoints whose failures have the shape the audit looks for (problems solved by most samples, by a few, by
none; longer chains than trained on mostly unsolved). A 0.9M-parameter Llama trained for ~20 minutes on 2 cores
gives exactly that spread.

Outputs (Hugging Face format, loadable by vLLM and transformers), under ``demo/checkpoints/``:

* ``arith-sft-s<step>`` at three points of one supervised run (early, middle, late);
* ``arith-rft-s<step>``: a different post-training recipe, rejection-sampling fine-tuning (RFT) of the late SFT
  checkpoint on its own correct samples.

Each directory also holds ``fixability_checkpoint.json`` (recipe, step, seed, training figures) which the audit
records with the checkpoint. Re-running with the same arguments reproduces the same weights on the same torch build.

    python -m scripts.train_demo_checkpoints --out demo/checkpoints
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fixability_dag.core.problems import FINAL_ANSWER_MARKER, PROMPT_TEMPLATE, arithmetic_chain, random_chain

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
TRAIN_CHAIN_LENGTHS = (1, 2, 3, 4)
ANSWER = re.compile(r"####\s*(-?\d+)")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer with one token per byte: any text encodes, digits stay separate (good for arithmetic)."""
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {PAD: 0, BOS: 1, EOS: 2}
    for ch in byte_chars:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, 1)])
    tok.add_special_tokens([PAD, BOS, EOS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=512, clean_up_tokenization_spaces=False
    )


def model_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )


def render_example(rng: random.Random, length: int) -> tuple[str, str]:
    numbers, ops = random_chain(rng, length, 2, ("+", "-"))
    question, steps, answer = arithmetic_chain(numbers, ops)
    completion = "".join(s + "\n" for s in steps) + FINAL_ANSWER_MARKER + answer
    return PROMPT_TEMPLATE.format(question=question), completion


def encode_sequence(tok: PreTrainedTokenizerFast, parts: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and loss mask for a sequence of (prompt, completion) pairs; loss only on completions.

    Some training sequences hold solved exemplars before the question, separated by a blank line, so that a few-shot
    prompt (the "prompt change" intervention) is in the model's distribution.
    """
    ids, mask = [1], [0]
    for i, (prompt, completion) in enumerate(parts):
        p = tok.encode(prompt, add_special_tokens=False)
        sep = "\n\n" if i < len(parts) - 1 else ""
        c = tok.encode(completion + sep, add_special_tokens=False)
        ids += p + c
        mask += [0] * len(p) + [1] * len(c)
    ids.append(2)
    mask.append(1)
    return ids, mask


def sample_batch(tok, rng: random.Random, batch_size: int, fixed: list[tuple[str, str]] | None = None):
    rows = []
    for _ in range(batch_size):
        if fixed is not None:
            parts = [rng.choice(fixed)]
        else:
            n_shots = rng.choices([0, 1, 2], weights=[0.75, 0.15, 0.10])[0]
            length = rng.choice(TRAIN_CHAIN_LENGTHS)
            parts = [render_example(rng, length) for _ in range(n_shots)] + [render_example(rng, length)]
        rows.append(encode_sequence(tok, parts))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.zeros((batch_size, width), dtype=torch.long)
    labels = torch.full((batch_size, width), -100, dtype=torch.long)
    attn = torch.zeros((batch_size, width), dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attn[i, : len(ids)] = 1
        labels[i, : len(ids)] = torch.tensor([t if m else -100 for t, m in zip(ids, mask)])
    return input_ids, attn, labels


@torch.no_grad()
def sample_completions(model, tok, prompts: list[str], n: int, max_new_tokens: int, gen: torch.Generator) -> list[list[str]]:
    """Temperature-1 ancestral sampling with left padding; used for RFT data and quick accuracy figures."""
    model.eval()
    flat = [p for p in prompts for _ in range(n)]
    enc = [tok.encode(p) for p in flat]
    width = max(map(len, enc))
    input_ids = torch.zeros((len(enc), width), dtype=torch.long)
    attn = torch.zeros_like(input_ids)
    for i, ids in enumerate(enc):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attn[i, width - len(ids) :] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids, use_cache=True)
    past = out.past_key_values
    done = torch.zeros(len(enc), dtype=torch.bool)
    generated = []
    logits = out.logits[:, -1]
    for _ in range(max_new_tokens):
        nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen).squeeze(-1)
        nxt = torch.where(done, torch.zeros_like(nxt), nxt)
        generated.append(nxt)
        done |= nxt == 2
        if bool(done.all()):
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=-1)
        position_ids = position_ids[:, -1:] + 1
        out = model(input_ids=nxt.unsqueeze(-1), attention_mask=attn, position_ids=position_ids, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
    model.train()
    gen_ids = torch.stack(generated, dim=1).tolist()
    texts = []
    for row in gen_ids:
        if 2 in row:
            row = row[: row.index(2)]
        texts.append(tok.decode([t for t in row if t > 2]))
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def accuracy_by_length(model, tok, seed: int, per_length: int = 24, n: int = 8) -> dict[int, float]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    acc = {}
    for length in range(1, 7):
        examples = [render_example(rng, length) for _ in range(per_length)]
        outs = sample_completions(model, tok, [p for p, _ in examples], n, 96, gen)
        correct = 0
        for (_, completion), samples in zip(examples, outs):
            gold = ANSWER.search(completion).group(1)
            correct += sum(1 for s in samples if (m := ANSWER.search(s)) and m.group(1) == gold)
        acc[length] = round(correct / (per_length * n), 4)
    return acc


def save_checkpoint(model, tok, out_dir: Path, meta: dict) -> None:
    """Write to a temporary directory and rename, so a watcher never sees a half-written checkpoint.

    The metadata records what the weights' bits depend on besides the seed: the torch build, its intra-op thread
    count and the CPU kernel path torch chose. Fixed all three, a run is deterministic; another thread count or
    another CPU can give other weights (measured 2026-12-07: the same Llama command gave the same sha256 twice on
    one machine and thread count, other weights on 1 thread than on 2, and other weights than the committed run's
    on another CPU, while the GPT-2 run matched bit for bit: demo/organism/training_log.txt)."""
    meta = {**meta, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        for f in tmp.iterdir():
            f.unlink()
    tmp.mkdir(parents=True, exist_ok=True)
    half = type(model)(model.config)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.float16)
    half.config.dtype = "float16"
    half.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "fixability_checkpoint.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if out_dir.exists():
        for f in out_dir.iterdir():
            f.unlink()
        out_dir.rmdir()
    tmp.rename(out_dir)
    print(f"saved {out_dir} ({sum(f.stat().st_size for f in out_dir.iterdir()) / 1e6:.2f} MB)", flush=True)


def lr_at(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, tok, steps: int, peak_lr: float, rng: random.Random, batch_size: int, start_step: int = 0,
          save_at: dict[int, str] | None = None, out: Path | None = None, meta: dict | None = None,
          fixed: list[tuple[str, str]] | None = None) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.98))
    losses, t0 = [], time.time()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr, warmup=min(100, steps // 10))
        input_ids, attn, labels = sample_batch(tok, rng, batch_size, fixed)
        loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        global_step = start_step + step + 1
        if global_step % 100 == 0:
            recent = sum(losses[-100:]) / len(losses[-100:])
            print(f"step {global_step} loss {recent:.4f} {time.time() - t0:.0f}s", flush=True)
        if save_at and global_step in save_at:
            acc = accuracy_by_length(model, tok, seed=1234)
            print(f"  accuracy by chain length at step {global_step}: {acc}", flush=True)
            save_checkpoint(model, tok, out / save_at[global_step], {**meta, "step": global_step, "sampled_accuracy_by_length": acc,
                                                                       "train_loss_last100": round(sum(losses[-100:]) / len(losses[-100:]), 4)})
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo/checkpoints"))
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--save-steps", type=int, nargs=3, default=(400, 1200, 2400))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rft-steps", type=int, default=300)
    parser.add_argument("--rft-problems", type=int, default=512)
    parser.add_argument("--rft-samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    tok = build_tokenizer()
    model = LlamaForCausalLM(model_config(len(tok)))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}", flush=True)
    meta = {"recipe": "sft", "seed": args.seed, "parameters": n_params, "batch_size": args.batch_size, "peak_lr": args.lr,
            "train_chain_lengths": list(TRAIN_CHAIN_LENGTHS)}
    save_at = {s: f"arith-sft-s{s:04d}" for s in args.save_steps}
    train(model, tok, args.steps, args.lr, rng, args.batch_size, save_at=save_at, out=args.out, meta=meta)

    # Rejection-sampling fine-tuning: the late SFT model's own correct samples become its training data.
    gen = torch.Generator().manual_seed(args.seed + 1)
    examples = [render_example(rng, rng.choice(TRAIN_CHAIN_LENGTHS)) for _ in range(args.rft_problems)]
    kept: list[tuple[str, str]] = []
    for i in range(0, len(examples), 128):
        chunk = examples[i : i + 128]
        outs = sample_completions(model, tok, [p for p, _ in chunk], args.rft_samples, 96, gen)
        for (prompt, completion), samples in zip(chunk, outs):
            gold = ANSWER.search(completion).group(1)
            kept += [(prompt, s) for s in set(samples) if (m := ANSWER.search(s)) and m.group(1) == gold]
    print(f"RFT: kept {len(kept)} distinct correct samples from {len(examples)} problems x {args.rft_samples}", flush=True)
    rft_meta = {**meta, "recipe": "rft", "parent": save_at[max(save_at)], "rft_problems": args.rft_problems,
                "rft_samples": args.rft_samples, "rft_kept": len(kept), "peak_lr": args.lr / 3}
    final = args.steps + args.rft_steps
    train(model, tok, args.rft_steps, args.lr / 3, rng, args.batch_size, start_step=args.steps,
          save_at={final: f"arith-rft-s{final:04d}"}, out=args.out, meta=rft_meta, fixed=kept)


if __name__ == "__main__":
    main()
