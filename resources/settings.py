"""The audit settings as a Dagster resource, generated from :class:`fixability_dag.pipeline.config.AuditConfig`.

Its fields are ``AuditConfig``'s own (a list where the config holds a tuple), plus ``settings_file``, so a setting
added to the config reaches the UI's launchpad and the run config without being written twice. Each field's
default is the value in the settings file ``$FIXABILITY_SETTINGS`` names (:mod:`fixability_dag.pipeline.settings`),
read and checked when this module is imported, i.e. when the code location loads: a bad file stops the load with
the key named. That matters in the UI, where Dagster *replaces* the resource with a launch's run config rather than
merging it into the bound instance: a launch that sets one key still gets the file's other settings, not the demo
defaults.

The sensor and the schedule re-read the file at each tick (:meth:`AuditSettings.reread`) and put every setting into
the run requests' run config (:meth:`AuditSettings.run_config`), so what the run audits is what the tick checked
and hashed, even after the file was edited. The values are checked again when the resource is built for a run
(before any step), which catches a launchpad edit.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field, create_model, model_validator

from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.pipeline.settings import SETTINGS_ENV, config_from_mapping, read_settings_file, settings_path_from_env


def _fields(defaults: AuditConfig, source: Path | None) -> dict:
    hints = typing.get_type_hints(AuditConfig)
    fields = {}
    for f in dataclasses.fields(AuditConfig):
        hint, value = hints[f.name], getattr(defaults, f.name)
        optional = type(None) in typing.get_args(hint)
        if optional and any(typing.get_origin(a) is tuple for a in typing.get_args(hint)):
            hint = next(a for a in typing.get_args(hint) if typing.get_origin(a) is tuple)  # e.g. stop: a list or null
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            if item is Mapping or typing.get_origin(item) is Mapping:
                item = dict[str, typing.Any]  # Dagster config types: a dict, not an abstract Mapping
            hint = list[item] | None if optional else list[item]
            value = None if value is None else [dict(v) if isinstance(v, Mapping) else v for v in value]
        fields[f.name] = (hint, Field(default=value))
    fields["settings_file"] = (str | None, Field(default=str(source) if source else None, description=(
        f"the YAML file these settings were read from (${SETTINGS_ENV}; unset: the demo defaults); recorded in "
        "audit_runs. The other fields are the settings themselves.")))
    return fields


_SOURCE = settings_path_from_env()
_DEFAULTS = read_settings_file(_SOURCE) if _SOURCE else AuditConfig()


class AuditSettings(create_model("AuditSettingsFields", __base__=ConfigurableResource, **_fields(_DEFAULTS, _SOURCE))):
    """How a checkpoint is audited (every key: README, "The settings file"). Changing any setting but
    ``commit_every`` changes the config hash, and the nightly schedule re-audits checkpoints audited under another."""

    @model_validator(mode="after")
    def _checked(self):
        self.config()
        return self

    def values(self) -> dict:
        """The settings, as the file and the run config spell them."""
        return {name: getattr(self, name) for name in AuditConfig.__dataclass_fields__}

    def config(self) -> AuditConfig:
        return config_from_mapping(self.values(), self.settings_file or "audit settings")

    @classmethod
    def from_file(cls, path: Path | str) -> AuditSettings:
        """The settings a file holds (every key not in it: the demo default), checked."""
        path = Path(path).expanduser().resolve()
        return cls(settings_file=str(path), **read_settings_file(path).as_dict())

    @classmethod
    def from_env(cls) -> AuditSettings:
        """The settings of ``$FIXABILITY_SETTINGS``, read now (unset: the demo defaults)."""
        path = settings_path_from_env()
        return cls.from_file(path) if path else cls(settings_file=None, **AuditConfig().as_dict())

    def reread(self) -> AuditSettings:
        """These settings as their file holds them now (itself when they came from no file)."""
        return type(self).from_file(self.settings_file) if self.settings_file else self

    def run_config(self) -> dict:
        """The run config that makes a run audit with exactly these settings."""
        return {"resources": {"settings": {"config": {**self.values(), "settings_file": self.settings_file}}}}
