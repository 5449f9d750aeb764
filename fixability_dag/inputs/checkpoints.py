"""Checkpoint directories: when one is complete, what it is called, and how to tell two apart.

A training job writes a checkpoint over seconds to minutes. Registering it half-written would audit a model that
does not exist (or crash the engine on a truncated file), so a directory counts as *complete* only when

* ``config.json`` parses and is an object with a ``model_type``,
* the weights are there (``*.safetensors``, with every shard named by an index file) and each safetensors file
  is exactly as long as its own header says, with a header whose tensors tile the data (the same rule the
  ``safetensors`` library applies, so a file we accept is one vLLM can open),
* a tokenizer is there (``tokenizer.json``, which must parse, or ``tokenizer.model``),
* no temporary or lock files remain, the directory's own name is not a temporary one (``run.partial``), and
  nothing in it changed for ``settle_seconds``.

What this cannot see: tensors whose *values* were corrupted with the structure intact (bit flips). The fingerprint
reads headers, sizes and a fixed 1 MiB sample of each weight file's tensor bytes (:func:`fingerprint`), enough to
tell a retrained or overwritten checkpoint, not to validate values, so such a checkpoint is audited as what it is,
a broken model. The sensor fingerprints every complete checkpoint each tick: 1 MiB a weight file, from the page
cache once read.

Checkpoint names are *refused*, not rewritten, when unsafe as a partition key (:func:`partition_key`): a mapped
name would make the key in the database differ from the directory users look for, and two names could map to one
key. The sensor logs each refusal with the rule, so renaming the directory is the fix.

Where checkpoints are looked for (:func:`discover`), under the checkpoint root, for the layouts training
frameworks write:

* a flat directory of named checkpoints, ``root/<name>/`` (key ``<name>``);
* Hugging Face Trainer / TRL, ``root/checkpoint-<N>/`` (the run's ``output_dir`` as root) or
  ``root/<run>/checkpoint-<N>/`` (a directory of runs; key ``<run>.checkpoint-<N>``);
* verl, ``root/global_step_<N>/actor/huggingface/`` (the experiment directory as root) or
  ``root/<experiment>/global_step_<N>/actor/huggingface/`` (key ``<experiment>.global_step_<N>``). The
  ``huggingface`` directory holds weights only when ``hf_model`` is among verl's saved checkpoint contents or after
  ``python -m verl.model_merger merge --backend fsdp --local_dir .../actor --target_dir .../actor/huggingface``;
  until then it is reported as having no weights.

A directory one level down is searched only when the root's child is not itself a model (no ``config.json``). The
training step is the ``step`` of ``fixability_checkpoint.json`` when there is one, else read from the name
(:func:`step_from_name`: ``checkpoint-500``, ``global_step_40``, ``run7-step100``, ``arith-sft-s0300``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
import time
from pathlib import Path

SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Safe as a Dagster partition key, a path segment, a URL segment and a log token. Used with ``fullmatch``: ``$``
would accept a trailing newline."""
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
    if not SAFE_KEY.fullmatch(name) or ".." in name:
        raise CheckpointError(
            f"checkpoint name {name!r} is not a safe partition key: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def _tensor_problem(name: str, entry) -> str | None:
    """Why one header entry is not a tensor description, or None."""
    if not isinstance(entry, dict):
        return f"entry {name!r} is not an object"
    offsets, shape = entry.get("data_offsets"), entry.get("shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        return f"tensor {name!r} has invalid data_offsets {str(offsets)[:40]}"
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        return f"tensor {name!r} has an invalid shape {str(shape)[:40]}"
    width = DTYPE_BYTES.get(entry.get("dtype"))
    if width is not None:
        count = 1
        for d in shape:
            count *= d
        if count * width != offsets[1] - offsets[0]:
            return f"tensor {name!r} ({entry['dtype']} {shape}) needs {count * width} bytes, its offsets span {offsets[1] - offsets[0]}"
    return None


def _safetensors_complete(path: Path) -> str | None:
    """None when the file is whole; otherwise why not (truncated, padded, or a header that is not a tensor table)."""
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
    if not isinstance(header, dict):
        return f"{path.name} has a header that is not a JSON object (corrupt)"
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, entry in tensors.items():
        if problem := _tensor_problem(name, entry):
            return f"{path.name} is corrupt: {problem}"
    spans = sorted(tuple(v["data_offsets"]) for v in tensors.values())
    end = 0
    for begin, stop in spans:
        if begin != end:
            return f"{path.name} is corrupt: tensor data {'overlaps' if begin < end else 'has a gap'} at byte {min(begin, end)}"
        end = stop
    if 8 + header_len + end > size:
        return f"{path.name} is truncated: tensors need {8 + header_len + end} bytes, file has {size}"
    if 8 + header_len + end < size:
        return f"{path.name} has {size - 8 - header_len - end} bytes after its last tensor (corrupt or being overwritten)"
    return None


FULL_PARSE_BYTES = 4 << 20
"""JSON files up to this size are parsed on every scan; larger ones (a big ``tokenizer.json``) only have their
first and last bytes checked, which catches the half-written case without parsing tens of MB per sensor tick."""


def _read_json_object(path: Path) -> tuple[dict | None, str | None]:
    """``(content, None)`` when ``path`` holds a JSON object, else ``(None, why not)``; always parsed whole."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return None, f"{path.name} is not valid UTF-8"
    except json.JSONDecodeError as exc:
        return None, f"{path.name} is not valid JSON ({exc.msg}, line {exc.lineno})"
    if not isinstance(value, dict):
        return None, f"{path.name} is not a JSON object"
    return value, None


def _json_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable JSON object, or None; past :data:`FULL_PARSE_BYTES` only its ends are read."""
    size = path.stat().st_size
    if size > FULL_PARSE_BYTES:
        with path.open("rb") as f:
            head = f.read(256).lstrip()
            f.seek(max(0, size - 256))
            tail = f.read().rstrip()
        if not (head.startswith(b"{") and tail.endswith(b"}")):
            return f"{path.name} does not start with '{{' and end with '}}' (truncated or still being written)"
        return None
    return _read_json_object(path)[1]


def incompleteness(path: Path, settle_seconds: float = 0.0, now: float | None = None) -> list[str]:
    """Every reason ``path`` is not (yet) an auditable checkpoint; an empty list means complete."""
    try:
        return _incompleteness(path, settle_seconds, now)
    except OSError as exc:  # a file vanished or was renamed mid-scan, or is unreadable: not auditable now
        return [f"cannot be read right now ({exc.strerror or type(exc).__name__}: {exc.filename or path})"]


def _incompleteness(path: Path, settle_seconds: float, now: float | None) -> list[str]:
    reasons: list[str] = []
    if not path.is_dir():
        return [f"{path} is not a directory"]
    if path.name.endswith(TEMP_MARKERS):
        reasons.append(f"directory name ends with a temporary suffix ({path.name}): still being written")
    files = [f for f in path.iterdir() if f.is_file()]
    names = {f.name for f in files}
    if "config.json" not in names:
        reasons.append("config.json missing")
    else:
        config, problem = _read_json_object(path / "config.json")  # small, and its model_type is needed
        if problem:
            reasons.append("config.json is not valid JSON" if "not valid JSON" in problem else problem)
        elif "model_type" not in config:
            reasons.append("config.json has no model_type")
    weights = sorted(f for f in files if f.suffix == ".safetensors")
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            missing = sorted(str(s) for s in shards if s not in names)
            if missing:
                reasons.append(f"weight shards missing: {', '.join(missing)}")
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError, AttributeError, TypeError):
            reasons.append("model.safetensors.index.json is unreadable")
    if not weights and "pytorch_model.bin" not in names:
        reasons.append("no weights (*.safetensors or pytorch_model.bin)")
    for w in weights:
        if problem := _safetensors_complete(w):
            reasons.append(problem)
    if not ({"tokenizer.json", "tokenizer.model"} & names):
        reasons.append("no tokenizer (tokenizer.json or tokenizer.model)")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if name in names and (problem := _json_problem(path / name)):
            reasons.append(problem)
    if "tokenizer.model" in names and (path / "tokenizer.model").stat().st_size == 0:
        reasons.append("tokenizer.model is empty")
    temp = sorted(n for n in names if n.endswith(TEMP_MARKERS))
    if temp:
        reasons.append(f"temporary files present: {', '.join(temp)}")
    if settle_seconds > 0 and files:
        age = (now or time.time()) - max(f.stat().st_mtime for f in files)
        if age < settle_seconds:
            reasons.append(f"modified {age:.0f}s ago, waiting {settle_seconds:.0f}s for writes to settle")
    return reasons


FINGERPRINT_CHUNKS = 256
FINGERPRINT_CHUNK_BYTES = 4096
"""A safetensors file's tensor bytes enter its fingerprint as this many evenly spaced chunks of this size (1 MiB
read per file, whatever its size): the header alone (names, dtypes, shapes, offsets) is the same for every
checkpoint of one architecture, so it cannot tell a retrained or overwritten checkpoint from the one audited."""


def _tensor_sample(fh, start: int, end: int) -> bytes:
    """The tensor bytes between ``start`` and ``end``: all of them when they are at most the sample's size, else
    :data:`FINGERPRINT_CHUNKS` chunks evenly spaced from the first byte to the last."""
    size = end - start
    budget = FINGERPRINT_CHUNKS * FINGERPRINT_CHUNK_BYTES
    if size <= budget:
        fh.seek(start)
        return fh.read(size)
    stride = (size - FINGERPRINT_CHUNK_BYTES) / (FINGERPRINT_CHUNKS - 1)
    parts = []
    for i in range(FINGERPRINT_CHUNKS):
        fh.seek(start + int(i * stride))
        parts.append(fh.read(FINGERPRINT_CHUNK_BYTES))
    return b"".join(parts)


def fingerprint(path: Path) -> str:
    """Hash of the config and tokenizer files, the weight headers and sizes, and a fixed sample of the tensor bytes
    (:data:`FINGERPRINT_CHUNKS`): it changes when the checkpoint is retrained or overwritten (training moves nearly
    every weight), without reading gigabytes of tensors. An edit of a few values between the sampled chunks can
    go unseen: re-audit such a checkpoint with ``--force``."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.name == METADATA_FILE:
            continue
        size = f.stat().st_size
        h.update(f.name.encode() + b"\0" + str(size).encode() + b"\0")
        if f.suffix == ".safetensors":
            with f.open("rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                h.update(fh.read(min(n, 10_000_000)))
                h.update(_tensor_sample(fh, 8 + n, size))
        elif f.suffix in (".json", ".model", ".txt") and size < 50_000_000:
            h.update(f.read_bytes())
    return h.hexdigest()[:32]


_HF_CHECKPOINT = re.compile(r"checkpoint-\d+")
_VERL_STEP = re.compile(r"global_step_\d+")
VERL_MODEL_DIR = ("actor", "huggingface")
"""Where verl keeps the Hugging Face copy of the actor inside ``global_step_<N>/``."""
_NAMED_STEP = re.compile(r"(?:^|[-_.])(?:checkpoint|global_step|step|ckpt|iter|s)[-_]?(\d+)$", re.I)


def step_from_name(key: str) -> int | None:
    """The training step a checkpoint's name ends with (``checkpoint-500``, ``exp.global_step_40``, ``s0300``)."""
    match = _NAMED_STEP.search(key)
    return int(match.group(1)) if match else None


def _model_dir(path: Path) -> Path:
    """A checkpoint directory's model directory: verl's ``actor/huggingface`` inside ``global_step_<N>``."""
    return path.joinpath(*VERL_MODEL_DIR) if _VERL_STEP.fullmatch(path.name) else path


def _is_step_dir(path: Path) -> bool:
    return bool(_HF_CHECKPOINT.fullmatch(path.name) or _VERL_STEP.fullmatch(path.name))


def discover(root: Path | str) -> tuple[dict[str, Path], dict[str, str]]:
    """Every checkpoint the supported layouts (module docstring) place under ``root``: partition key -> model
    directory, complete or not; and the keys refused because two directories map to them."""
    root = Path(root)
    clashes: dict[str, list[Path]] = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        runs = []  # a directory of Trainer runs or verl experiments: its checkpoints are one level down
        try:
            if not (child / "config.json").exists() and not _is_step_dir(child):
                runs = [(f"{child.name}.{s.name}", s) for s in sorted(child.iterdir()) if s.is_dir() and _is_step_dir(s)]
        except OSError:  # unreadable or gone mid-scan: inspected as itself, which says why
            runs = []
        for key, path in runs or [(child.name, child)]:
            clashes.setdefault(key, []).append(_model_dir(path))
    found = {key: paths[0] for key, paths in clashes.items() if len(paths) == 1}
    refused = {key: f"{len(paths)} directories map to partition key {key!r}: {', '.join(map(str, paths))}; rename one"
               for key, paths in clashes.items() if len(paths) > 1}
    return found, refused


def locate(root: Path | str, key: str) -> Path:
    """The model directory behind a partition key, in any supported layout."""
    found, refused = discover(root) if Path(root).is_dir() else ({}, {})
    if key in refused:
        raise CheckpointError(refused[key])
    if key not in found:
        raise CheckpointError(f"no checkpoint directory for partition key {partition_key(key)!r} under {root} "
                              "(layouts: <name>/, checkpoint-<N>/, <run>/checkpoint-<N>/, global_step_<N>/actor/huggingface/)")
    return found[key]


def inspect_checkpoint(path: Path | str, settle_seconds: float = 0.0, key: str | None = None) -> CheckpointInfo:
    """A complete checkpoint's identity, or :class:`CheckpointError` listing what is missing. ``key`` is the
    partition key (default: the directory's name; :func:`discover` gives it for nested layouts)."""
    path = Path(path)
    key = partition_key(path.name if key is None else key)
    reasons = incompleteness(path, settle_seconds)
    if reasons:
        raise CheckpointError(f"checkpoint {path} is not complete: {'; '.join(reasons)}")
    info: dict = {}
    meta = path / METADATA_FILE
    if meta.exists():
        info, problem = _read_json_object(meta)
        if problem:
            raise CheckpointError(f"checkpoint {path}: {problem}")
    step = info.get("step")
    return CheckpointInfo(
        checkpoint_id=key,
        path=path.resolve(),
        fingerprint=fingerprint(path),
        recipe=info.get("recipe"),
        training_step=int(step) if isinstance(step, int) and not isinstance(step, bool) else step_from_name(key),
        info=info,
    )


def scan(root: Path | str, settle_seconds: float = 0.0) -> tuple[list[CheckpointInfo], dict[str, str]]:
    """Complete checkpoints under ``root`` in every supported layout (:func:`discover`), and why every other
    candidate directory was passed over, by key."""
    root = Path(root)
    if not root.is_dir():
        return [], {str(root): "checkpoint directory does not exist"}
    found, skipped = discover(root)
    complete = []
    for key, path in found.items():
        try:
            complete.append(inspect_checkpoint(path, settle_seconds, key))
        except CheckpointError as exc:
            skipped[key] = str(exc)
        except OSError as exc:  # changed between the completeness check and the fingerprint: next tick decides
            skipped[key] = f"checkpoint {path} changed while being inspected ({exc.strerror or exc})"
    return complete, skipped
