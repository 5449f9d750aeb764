"""The checkpoint trainers' save (scripts/): what a retrained checkpoint records about the bits of its weights.

A rerun on another CPU gave other Llama weights than the committed run (demo/organism/training_log.txt), so each
save records the torch build, thread count and CPU kernel path; a save must also be a checkpoint the audit accepts.
"""

from __future__ import annotations

import json
import random

import torch
from transformers import LlamaForCausalLM

from fixability_dag.inputs.checkpoints import METADATA_FILE, incompleteness, inspect_checkpoint
from scripts.train_demo_checkpoints import build_tokenizer, model_config, save_checkpoint, train


def _trained(tmp_path, name: str, steps: int = 2) -> bytes:
    torch.manual_seed(7)
    tok = build_tokenizer()
    model = LlamaForCausalLM(model_config(len(tok)))
    train(model, tok, steps, 3e-3, random.Random(7), batch_size=4)
    save_checkpoint(model, tok, tmp_path / name, {"recipe": "sft", "step": steps, "seed": 7})
    return (tmp_path / name / "model.safetensors").read_bytes()


def test_a_save_records_what_its_bits_depend_on_and_is_auditable(tmp_path):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = _trained(tmp_path, "run-a-s0002")
        again = _trained(tmp_path, "run-b-s0002")
    finally:
        torch.set_num_threads(threads)
    meta = json.loads((tmp_path / "run-a-s0002" / METADATA_FILE).read_text())
    assert meta["torch"] == torch.__version__ and meta["torch_threads"] == 1
    assert meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability() != ""
    assert meta["recipe"] == "sft" and meta["seed"] == 7  # the caller's keys survive the merge
    assert first == again  # one machine, one thread count, one seed: the same bytes
    assert incompleteness(tmp_path / "run-a-s0002") == []
    assert inspect_checkpoint(tmp_path / "run-a-s0002").training_step == 2
    assert not list(tmp_path.glob("*.partial"))
