"""Train the model-organism checkpoints: tiny models whose failures have known, planted mechanisms.

The mechanisms live in the training data (see :mod:`fixability_dag.core.organism` for the table): the ``noisy``
operator's operand is miscopied in 95% of training sequences, the ``numeric`` family's products are in the data but
beyond the model, the ``format`` operator is done right only after a solved exemplar of it, and ``long`` chains are
longer than any training chain. Solutions carry the GSM8K calculator annotation (``<<68-12=56>>56``).

One invocation trains one run and saves it at the given steps; ``--rft`` then fine-tunes the last save on its own
correct samples (rejection-sampling fine-tuning, a second post-training recipe). ``--arch gpt2`` trains a second
model family (GPT-2 blocks: learned positions, LayerNorm, GELU) with its own tokenizer (a vocabulary of its own
order that also merges the annotation's ``<<``, ``>>`` and ``#### ``), on the same data.

    python -m scripts.train_organism --out demo/organism --arch llama --seed 7 --steps 1500 --save-steps 300 700 1500 --rft

(the committed checkpoints' commands are `make train-organism`'s).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, PreTrainedTokenizerFast

from fixability_dag.core.organism import (
    FAMILIES, LENGTHS, MEANING, SPECIAL_OPERATOR, annotated_steps, organism_chain, question_text, reference,
    miscopied_operand,
)
from fixability_dag.core.problems import FINAL_ANSWER_MARKER, PROMPT_TEMPLATE
from scripts.train_demo_checkpoints import ANSWER, build_tokenizer, lr_at, model_config, save_checkpoint

TRAIN_FAMILIES = {"control": 0.40, "noisy": 0.15, "numeric": 0.15, "format": 0.30}
"""Training mix by family of the *target* question (``long`` is never trained)."""
MISCOPY_RATE = 0.95
FEW_SHOT_RATE = 0.25
FORMAT_EXEMPLAR_RATE = 0.6
"""In a few-shot sequence whose target is a ``format`` question, how often an exemplar is a solved ``@`` problem."""


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """The second family's own tokenizer: the 256 byte symbols in an order of their own, plus merges for the
    annotation's and the frame's multi-character pieces, so ids, token boundaries and vocabulary size all differ
    from the Llama family's one-token-per-byte tokenizer."""
    table = _byte_table()
    vocab = {"<|endoftext|>": 0, "<|pad|>": 1}
    for ch in sorted(table.values(), reverse=True):
        vocab.setdefault(ch, len(vocab))
    merges = [tuple("".join(table[b] for b in part.encode()) for part in pair) for pair in GPT2_MERGES]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|pad|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|pad|>", model_max_length=512, clean_up_tokenization_spaces=False)


GPT2_MERGES = (("<", "<"), (">", ">"), ("#", "#"), ("##", "##"), ("####", " "), ("Q", ":"), ("Q:", " "), ("\n", "A"),
               ("\nA", ":"), ("\nA:", " "))
"""The second tokenizer's merges, in rank order: the annotation's ``<<``/``>>``, the answer marker, the frame."""


def _byte_table() -> dict[int, str]:
    """GPT-2's bytes-to-unicode map, the one tokenizers' ByteLevel pre-tokenizer uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def gpt2_config(vocab_size: int, eos: int, pad: int) -> GPT2Config:
    return GPT2Config(vocab_size=vocab_size, n_positions=512, n_embd=128, n_layer=4, n_head=4, n_inner=384,
                      bos_token_id=eos, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=True)


@torch.no_grad()
def sample_completions(model, tok, prompts: list[str], n: int, max_new_tokens: int, gen: torch.Generator) -> list[list[str]]:
    """Temperature-1 ancestral sampling with left padding, for either family (their EOS and specials differ)."""
    model.eval()
    eos, specials = tok.eos_token_id, set(tok.all_special_ids)
    enc = [tok.encode(p) for p in prompts for _ in range(n)]
    width = max(map(len, enc))
    input_ids = torch.full((len(enc), width), tok.pad_token_id, dtype=torch.long)
    attn = torch.zeros_like(input_ids)
    for i, ids in enumerate(enc):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attn[i, width - len(ids) :] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1]
    done = torch.zeros(len(enc), dtype=torch.bool)
    generated = []
    for _ in range(max_new_tokens):
        nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen).squeeze(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        generated.append(nxt)
        done |= nxt == eos
        if bool(done.all()):
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=-1)
        position_ids = position_ids[:, -1:] + 1
        out = model(input_ids=nxt.unsqueeze(-1), attention_mask=attn, position_ids=position_ids, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
    model.train()
    texts = []
    for row in torch.stack(generated, dim=1).tolist():
        row = row[: row.index(eos)] if eos in row else row
        texts.append(tok.decode([t for t in row if t not in specials]))
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def target_completion(rng: random.Random, family: str, numbers: list[int], symbols: list[str], format_shown: bool) -> str:
    """The completion a training sequence teaches for its target question: the planted mechanism lives here."""
    written = [MEANING[s] for s in symbols]
    operands = list(numbers[1:])
    if family == "noisy" and rng.random() < MISCOPY_RATE:
        operands[-1] = miscopied_operand(operands[-1])
    if family == "format" and not format_shown:
        written[-1] = "+"  # the confident zero-shot default
    steps, answer = annotated_steps(numbers, written, operands)
    return "".join(s + "\n" for s in steps) + FINAL_ANSWER_MARKER + answer


def solved(numbers: list[int], symbols: list[str]) -> tuple[str, str]:
    steps, answer = reference(numbers, symbols)
    return PROMPT_TEMPLATE.format(question=question_text(numbers, symbols)), "".join(s + "\n" for s in steps) + FINAL_ANSWER_MARKER + answer


def training_sequence(rng: random.Random, few_shot: bool | None = None) -> tuple[list[tuple[str, str]], int]:
    """(prompt, completion) parts of one training sequence; the loss is on the last completion only, so exemplars
    (reference solutions, as the few-shot intervention shows them) never teach the zero-shot behaviour."""
    family = rng.choices(list(TRAIN_FAMILIES), weights=list(TRAIN_FAMILIES.values()))[0]
    length = rng.choice(LENGTHS[family])
    numbers, symbols = organism_chain(rng, family, length)
    shots = []
    if rng.random() < FEW_SHOT_RATE if few_shot is None else few_shot:
        for _ in range(rng.choice((1, 2))):
            if family == "format" and rng.random() < FORMAT_EXEMPLAR_RATE:
                shot_family = "format"
            else:
                shot_family = rng.choices(list(TRAIN_FAMILIES), weights=list(TRAIN_FAMILIES.values()))[0]
            shots.append(solved(*organism_chain(rng, shot_family, rng.choice(LENGTHS[shot_family]))))
    format_shown = any(SPECIAL_OPERATOR["format"] in prompt for prompt, _ in shots)
    target = (PROMPT_TEMPLATE.format(question=question_text(numbers, symbols)),
              target_completion(rng, family, numbers, symbols, format_shown))
    return [*shots, target], len(shots)


def encode(tok, parts: list[tuple[str, str]], bos: int | None, eos: int) -> tuple[list[int], list[int]]:
    ids, mask = ([bos], [0]) if bos is not None else ([], [])
    for i, (prompt, completion) in enumerate(parts):
        last = i == len(parts) - 1
        p = tok.encode(prompt, add_special_tokens=False)
        c = tok.encode(completion + ("" if last else "\n\n"), add_special_tokens=False)
        ids += p + c
        mask += [0] * len(p) + [int(last)] * len(c)
    return ids + [eos], mask + [1]


def batch(tok, rng: random.Random, size: int, bos: int | None, eos: int, pad: int, fixed=None):
    """One batch, all zero-shot or all few-shot (a few-shot batch with probability FEW_SHOT_RATE): a batch pads to
    its longest sequence, and one three-part sequence would triple the width of a batch of single questions."""
    few_shot = rng.random() < FEW_SHOT_RATE
    rows = [encode(tok, [rng.choice(fixed)] if fixed else training_sequence(rng, few_shot)[0], bos, eos) for _ in range(size)]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((size, width), pad, dtype=torch.long)
    labels = torch.full((size, width), -100, dtype=torch.long)
    attn = torch.zeros((size, width), dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attn[i, : len(ids)] = 1
        labels[i, : len(ids)] = torch.tensor([t if m else -100 for t, m in zip(ids, mask)])
    return input_ids, attn, labels


def family_accuracy(model, tok, seed: int, per_family: int = 24, n: int = 8) -> dict[str, float]:
    """Sampled zero-shot accuracy per family (temperature 1), the training log's check that each mechanism took."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for family in FAMILIES:
        examples = [solved(*organism_chain(rng, family, rng.choice(LENGTHS[family]))) for _ in range(per_family)]
        samples = sample_completions(model, tok, [p for p, _ in examples], n, 160, gen)
        correct = sum(1 for (_, c), ss in zip(examples, samples) for s in ss
                      if (m := ANSWER.search(s)) and m.group(1) == ANSWER.search(c).group(1))
        out[family] = round(correct / (per_family * n), 4)
    return out


def run(model, tok, steps: int, peak_lr: float, rng: random.Random, batch_size: int, save_at: dict[int, str], out: Path,
        meta: dict, start: int = 0, fixed=None) -> None:
    bos = tok.bos_token_id if isinstance(model, LlamaForCausalLM) else None
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.98))
    losses, t0 = [], time.time()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr, warmup=min(100, steps // 10))
        input_ids, attn, labels = batch(tok, rng, batch_size, bos, tok.eos_token_id, tok.pad_token_id, fixed)
        loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        global_step = start + step + 1
        if global_step % 100 == 0:
            print(f"step {global_step} loss {sum(losses[-100:]) / len(losses[-100:]):.4f} {time.time() - t0:.0f}s", flush=True)
        if global_step in save_at:
            acc = family_accuracy(model, tok, seed=1234)
            print(f"  sampled accuracy by family at step {global_step}: {acc}", flush=True)
            save_checkpoint(model, tok, out / save_at[global_step],
                            {**meta, "step": global_step, "sampled_accuracy_by_family": acc,
                             "train_loss_last100": round(sum(losses[-100:]) / len(losses[-100:]), 4)})


def rft_data(model, tok, rng: random.Random, problems: int, samples: int, seed: int) -> list[tuple[str, str]]:
    """The model's own correct zero-shot samples on fresh training-distribution questions."""
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(problems):
        family = rng.choices(list(TRAIN_FAMILIES), weights=list(TRAIN_FAMILIES.values()))[0]
        examples.append(solved(*organism_chain(rng, family, rng.choice(LENGTHS[family]))))
    kept = []
    for i in range(0, len(examples), 128):
        chunk = examples[i : i + 128]
        for (prompt, completion), ss in zip(chunk, sample_completions(model, tok, [p for p, _ in chunk], samples, 160, gen)):
            gold = ANSWER.search(completion).group(1)
            kept += [(prompt, s) for s in sorted(set(ss)) if (m := ANSWER.search(s)) and m.group(1) == gold]
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo/organism"))
    parser.add_argument("--arch", choices=("llama", "gpt2"), default="llama")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--save-steps", type=int, nargs="+", default=(400, 800, 1600))
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rft", action="store_true", help="then fine-tune the last save on its own correct samples")
    parser.add_argument("--rft-steps", type=int, default=200)
    parser.add_argument("--rft-problems", type=int, default=384)
    parser.add_argument("--rft-samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    if args.arch == "llama":
        tok = build_tokenizer()
        model = LlamaForCausalLM(model_config(len(tok)))
    else:
        tok = gpt2_tokenizer()
        model = GPT2LMHeadModel(gpt2_config(len(tok), tok.eos_token_id, tok.pad_token_id))
    prefix = f"org-{args.arch}-seed{args.seed}"
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{prefix}: {n_params} parameters", flush=True)
    meta = {"recipe": "sft", "family": args.arch, "seed": args.seed, "parameters": n_params, "batch_size": args.batch_size,
            "peak_lr": args.lr, "annotations": "gsm8k", "miscopy_rate": MISCOPY_RATE, "train_families": TRAIN_FAMILIES}
    save_at = {s: f"{prefix}-sft-s{s:04d}" for s in args.save_steps}
    run(model, tok, args.steps, args.lr, rng, args.batch_size, save_at, args.out, meta)
    if args.rft:
        kept = rft_data(model, tok, rng, args.rft_problems, args.rft_samples, args.seed + 1)
        print(f"RFT: kept {len(kept)} distinct correct samples from {args.rft_problems} problems x {args.rft_samples}", flush=True)
        final = args.steps + args.rft_steps
        run(model, tok, args.rft_steps, args.lr / 3, rng, args.batch_size, {final: f"{prefix}-rft-s{final:04d}"}, args.out,
            {**meta, "recipe": "rft", "parent": save_at[args.steps], "rft_kept": len(kept), "peak_lr": args.lr / 3},
            start=args.steps, fixed=kept)


if __name__ == "__main__":
    main()
