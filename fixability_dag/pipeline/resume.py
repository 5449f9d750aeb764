"""Which requests of a phase a re-run must generate, and which committed sample groups it may keep.

Rollouts are committed per chunk of requests, each request's ``n`` samples (a *group*, keyed by problem and
intervention within a checkpoint and phase) in one transaction. A run killed half-way therefore leaves whole groups
only, each stamped with the hash of what produced it. On re-run a group is kept when its hash still matches and it
holds all ``n`` samples; everything else is generated again and replaces what was there. Because seeds are part
of the hash, a kept group is exactly what the re-run would have drawn (up to the engine's own nondeterminism).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence

from fixability_dag.core.prompts import prompt_payload
from fixability_dag.core.sampling import GenerationRequest

GroupKey = tuple[str, str]
"""(problem_id, intervention) within one checkpoint and phase."""


def group_key(request: GenerationRequest) -> GroupKey:
    return (request.problem_id, request.intervention)


def request_hash(request: GenerationRequest, weights_fingerprint: str | None) -> str:
    """Everything that decides a group's samples: prompt, n, seed, decoding, and the checkpoint's weights. A text
    prompt enters as itself, so completion-mode groups stored before chat prompts existed keep their hashes."""
    payload = {
        "prompt": prompt_payload(request.prompt), "n": request.n, "seed": request.seed, "phase": request.phase,
        "intervention": request.intervention, "decoding": dataclasses.asdict(request.decoding),
        "weights": weights_fingerprint,
    }
    if request.first_index:  # blocks after the first (kept out otherwise, so unblocked groups keep their hashes)
        payload["first_index"] = request.first_index
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=16).hexdigest()


@dataclasses.dataclass(frozen=True)
class ResumePlan:
    todo: list[GenerationRequest]
    kept: int
    stale: list[GroupKey]
    """Stored groups no request asks for any more (config changed): removed before generating."""


def plan_resume(requests: Sequence[GenerationRequest], stored: Mapping[GroupKey, tuple[str | None, int]],
                hashes: Mapping[GroupKey, str]) -> ResumePlan:
    """``stored`` maps each committed group to (request hash, sample count)."""
    keys = [group_key(r) for r in requests]
    if len(set(keys)) != len(keys):
        raise ValueError("two requests of one phase share a (problem, intervention) group")
    todo = [r for r, k in zip(requests, keys) if stored.get(k) != (hashes[k], r.n)]
    wanted = set(keys)
    return ResumePlan(todo=todo, kept=len(requests) - len(todo), stale=sorted(k for k in stored if k not in wanted))
