"""Checkpoint directories: when one is complete, what it is called, and how to tell two apart.

A training job writes a checkpoint over seconds to minutes. Registering it half-written would audit a model that
does not exist (or crash the engine on a truncated file), so a directory counts as *complete* only when

* ``config.json`` parses,
* the weights are there (``*.safetensors``, with every shard named by an index file) and each safetensors file
  is as long as its own header says,
* a tokenizer is there (``tokenizer.json`` or ``tokenizer.model``),
* no temporary or lock files remain, and nothing in it changed for ``settle_seconds``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
import time
from pathlib import Path

SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TEMP_MARKERS = (".partial", ".tmp", ".lock", ".incomplete", ".part")
METADATA_FILE = "fixability_checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint directory cannot be audited; the message names the directory and what is wrong."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    checkpoint_id: str
    path: Path
    fingerprint: str
    recipe: str | None
    training_step: int | None
    info: dict


def partition_key(name: str) -> str:
    """The directory name as a partition key, refused when unsafe as a key, a path segment or in SQL logs."""
    if not SAFE_KEY.match(name) or ".." in name:
        raise CheckpointError(
            f"checkpoint name {name!r} is not a safe partition key: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _safetensors_complete(path: Path) -> str | None:
    """None when the file is whole; otherwise why not (truncated header or data)."""
    size = path.stat().st_size
    if size < 8:
        return f"{path.name} is {size} bytes, shorter than a safetensors header"
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8 or header_len > 100_000_000:
            return f"{path.name} header claims {header_len} bytes but the file has {size}"
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{path.name} has an unreadable header (corrupt or still being written)"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        return f"{path.name} is truncated: tensors need {8 + header_len + end} bytes, file has {size}"
    return None


def incompleteness(path: Path, settle_seconds: float = 0.0, now: float | None = None) -> list[str]:
    """Every reason ``path`` is not (yet) an auditable checkpoint; an empty list means complete."""
    reasons: list[str] = []
    if not path.is_dir():
        return [f"{path} is not a directory"]
    files = [f for f in path.iterdir() if f.is_file()]
    names = {f.name for f in files}
    if "config.json" not in names:
        reasons.append("config.json missing")
    else:
        try:
            json.loads((path / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            reasons.append("config.json is not valid JSON")
    weights = sorted(f for f in files if f.suffix == ".safetensors")
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
            missing = sorted(s for s in shards if s not in names)
            if missing:
                reasons.append(f"weight shards missing: {', '.join(missing)}")
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            reasons.append("model.safetensors.index.json is unreadable")
    if not weights and "pytorch_model.bin" not in names:
        reasons.append("no weights (*.safetensors or pytorch_model.bin)")
    for w in weights:
        if problem := _safetensors_complete(w):
            reasons.append(problem)
    if not ({"tokenizer.json", "tokenizer.model"} & names):
        reasons.append("no tokenizer (tokenizer.json or tokenizer.model)")
    temp = sorted(n for n in names if n.endswith(TEMP_MARKERS))
    if temp:
        reasons.append(f"temporary files present: {', '.join(temp)}")
    if settle_seconds > 0 and files:
        age = (now or time.time()) - max(f.stat().st_mtime for f in files)
        if age < settle_seconds:
            reasons.append(f"modified {age:.0f}s ago, waiting {settle_seconds:.0f}s for writes to settle")
    return reasons


def fingerprint(path: Path) -> str:
    """Hash of the config, tokenizer and weight headers plus weight sizes: changes when the checkpoint does,
    without reading gigabytes of tensors."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.name == METADATA_FILE:
            continue
        h.update(f.name.encode() + b"\0" + str(f.stat().st_size).encode() + b"\0")
        if f.suffix == ".safetensors":
            with f.open("rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                h.update(fh.read(min(n, 10_000_000)))
        elif f.suffix in (".json", ".model", ".txt") and f.stat().st_size < 50_000_000:
            h.update(f.read_bytes())
    return h.hexdigest()[:32]


def inspect_checkpoint(path: Path | str, settle_seconds: float = 0.0) -> CheckpointInfo:
    """A complete checkpoint's identity, or :class:`CheckpointError` listing what is missing."""
    path = Path(path)
    key = partition_key(path.name)
    reasons = incompleteness(path, settle_seconds)
    if reasons:
        raise CheckpointError(f"checkpoint {path} is not complete: {'; '.join(reasons)}")
    info: dict = {}
    meta = path / METADATA_FILE
    if meta.exists():
        try:
            info = json.loads(meta.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{meta}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    step = info.get("step")
    return CheckpointInfo(
        checkpoint_id=key,
        path=path.resolve(),
        fingerprint=fingerprint(path),
        recipe=info.get("recipe"),
        training_step=int(step) if isinstance(step, int) else None,
        info=info,
    )


def scan(root: Path | str, settle_seconds: float = 0.0) -> tuple[list[CheckpointInfo], dict[str, str]]:
    """Complete checkpoints under ``root`` (one level deep), and why every other directory was passed over."""
    root = Path(root)
    complete, skipped = [], {}
    if not root.is_dir():
        return [], {str(root): "checkpoint directory does not exist"}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            complete.append(inspect_checkpoint(child, settle_seconds))
        except CheckpointError as exc:
            skipped[child.name] = str(exc)
    return complete, skipped
