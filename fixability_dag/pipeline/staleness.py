"""The re-audit policy: which checkpoints need an audit, and why. One function for every entry point.

The checkpoint sensor, the nightly schedule and ``fixability demo`` all ask the same question, so they answer it
here: a checkpoint needs an audit when the results database holds no successful audit of its final step
(:data:`FINAL_ASSET`) under the current code version and config hash, or (when the caller knows the weights on
disk) when the registered fingerprint differs from the weights there now. Anything else costs no GPU time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.storage.store import AuditStore

FINAL_ASSET = "rescue_evaluation"
"""The last per-checkpoint step: an audit counts as done when this step succeeded."""


def checkpoints_to_audit(store: AuditStore, keys: Iterable[str], config_hash: str,
                         fingerprints: Mapping[str, str] | None = None) -> dict[str, str]:
    """Checkpoint -> why it needs an audit, for those of ``keys`` that do (sorted by key).

    ``fingerprints`` (checkpoint -> fingerprint of the weights on disk) adds the "weights changed" reason: an
    overwritten checkpoint directory is re-audited even though its last audit used the current code and config.
    """
    keys = list(keys)
    store.migrate()
    latest = {r.checkpoint_id: r for r in store.latest_audits(FINAL_ASSET).itertuples(index=False)}
    registered = {}
    if fingerprints:
        stored = store.read("checkpoints", checkpoint_id=list(fingerprints))
        registered = dict(zip(stored["checkpoint_id"], stored["fingerprint"]))
    why = {}
    for key in sorted(keys):
        row = latest.get(key)
        if row is None:
            why[key] = "never audited"
        elif row.code_version != CODE_VERSION:
            why[key] = f"audited with code {row.code_version}, now {CODE_VERSION}"
        elif row.config_hash != config_hash:
            why[key] = f"audited with config {row.config_hash}, now {config_hash}"
        elif fingerprints and key in fingerprints and registered.get(key) != fingerprints[key]:
            why[key] = "weights changed since the last audit"
    return why
