"""The audit settings file: one YAML file, named by ``$FIXABILITY_SETTINGS``, read by every entry point.

The sensor, the nightly schedule, a launch or backfill from the UI and ``fixability audit`` must audit with the same
settings, or the sensor audits one suite and the CLI another (issue 13). So the settings live in one file of
:class:`~fixability_dag.pipeline.config.AuditConfig` keys, and an unset variable means the demo defaults. The file is
checked whole when it is read (the code location's import, each sensor and schedule tick, the CLI's start): an
unknown key, a value of the wrong type, a ``problem_path`` whose format cannot be inferred, zero samples or budgets
that contradict each other are refused with the file and the key named, before any run starts. A step never sees
a setting that was not checked.

A relative ``problem_path`` is read relative to the settings file, so the file means the same from any directory.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from pathlib import Path

import yaml

from fixability_dag.inputs.problem_files import ProblemFileError
from fixability_dag.pipeline.config import AuditConfig

SETTINGS_ENV = "FIXABILITY_SETTINGS"
"""The environment variable naming the settings file (unset: the demo defaults)."""

INFERRED_FORMATS = {".csv": "csv"}
"""``problem_format`` inferred from ``problem_path``'s extension. A ``.jsonl`` file could be GSM8K, MATH or generic
rows (their gold answers are read differently), so it must say which."""


class SettingsError(ValueError):
    """A settings file (or mapping) that cannot be audited with; the message names the file and the key."""


def _hints() -> dict[str, object]:
    return typing.get_type_hints(AuditConfig)


def _describe(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_type(key: str, hint, value):
    """``value`` as the field's type (YAML lists become tuples), or :class:`SettingsError` naming the key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _check_type(key, hint, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"setting {key!r}: expected a list, got {value!r}")
        return tuple(_check_type(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
    known = {bool: isinstance(value, bool),
             int: isinstance(value, int) and not isinstance(value, bool),
             float: isinstance(value, (int, float)) and not isinstance(value, bool),
             str: isinstance(value, str)}
    ok = known[hint] if hint in known else not isinstance(hint, type) or isinstance(value, hint)
    if not ok:
        raise SettingsError(f"setting {key!r}: expected {_describe(hint)}, got {value!r}")
    return float(value) if hint is float else value


def config_from_mapping(values: dict, source: str | None = None) -> AuditConfig:
    """An :class:`AuditConfig` from settings ``values``, every key checked; errors name ``source`` and the key.

    ``problem_path`` without ``problem_format`` takes the format its extension implies (:data:`INFERRED_FORMATS`)
    and is refused when there is none: the old default audited the arithmetic suite instead, silently.
    """
    where = f"{source}: " if source else ""
    if not isinstance(values, dict):
        raise SettingsError(f"{where}expected a mapping of audit settings, got {type(values).__name__}")
    hints = _hints()
    unknown = sorted(set(values) - set(hints))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, hints, n=1)
        raise SettingsError(f"{where}unknown setting {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                            + f"; known settings: {', '.join(sorted(hints))}")
    try:
        checked = {key: _check_type(key, hints[key], value) for key, value in values.items()}
    except SettingsError as exc:
        raise SettingsError(f"{where}{exc}") from None
    if checked.get("problem_path") and "problem_format" not in checked:
        suffix = Path(checked["problem_path"]).suffix.lower()
        if suffix not in INFERRED_FORMATS:
            raise SettingsError(f"{where}setting 'problem_format': missing, and cannot be inferred from problem_path "
                                f"{checked['problem_path']!r} (only {', '.join(INFERRED_FORMATS)} can); set it to one "
                                f"of gsm8k, math, jsonl, csv")
        checked["problem_format"] = INFERRED_FORMATS[suffix]
    try:
        return AuditConfig(**checked)
    except ValueError as exc:
        raise SettingsError(f"{where}{exc}") from None


def read_settings_file(path: Path | str) -> AuditConfig:
    """The file's settings (a relative ``problem_path`` resolved against the file), checked whole: the problem file
    too, so a malformed row is refused now (file, line, field) rather than in the first step."""
    path = Path(path).expanduser().resolve()
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"settings file {path} (${SETTINGS_ENV}): cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {path}: not valid YAML: {exc}") from None
    values = {} if values is None else values
    if isinstance(values, dict) and isinstance(values.get("problem_path"), str):
        values = {**values, "problem_path": str((path.parent / values["problem_path"]).resolve())}
    config = config_from_mapping(values, str(path))
    if config.problem_path is not None:
        try:
            config.load_problems()
        except (ProblemFileError, OSError) as exc:
            raise SettingsError(f"{path}: setting 'problem_path': {exc}") from None
    return config


def settings_path_from_env() -> Path | None:
    """The settings file ``$FIXABILITY_SETTINGS`` names, or None (the demo defaults)."""
    value = os.environ.get(SETTINGS_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None
