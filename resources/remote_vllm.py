"""``vllm serve`` servers as the rollout engine: a fleet of GPU hosts serving one audit (docs/remote_engines.md)."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import EnvVar
from pydantic import Field

from fixability_dag.engines.remote import RemoteEngine, RemoteOptions, normalize_base_url
from resources.rollout_engine import RolloutEngineResource
from resources.vllm_engine import VLLMResource

URLS_ENV = "FIXABILITY_VLLM_URLS"
API_KEY_ENV = "FIXABILITY_VLLM_API_KEY"
_D = RemoteOptions()


class RemoteVLLMResource(RolloutEngineResource):
    """Servers started with ``vllm serve <checkpoint>`` (OpenAI-compatible API), all serving the audited checkpoint.

    Every server is asked ``GET /v1/models`` before it gets a request and refused if it does not serve the
    partition's checkpoint (matched by path or directory name, or by ``served_model_names``). Give the API key as
    ``api_key=EnvVar("FIXABILITY_VLLM_API_KEY")`` (what :func:`engine_resource_from_env` does when that variable is
    set): Dagster reads it at run time and shows only the variable's name in run config and the UI.
    """

    base_urls: list[str] = Field(description="e.g. ['http://gpu-1:8000', 'http://gpu-2:8000'] (a trailing /v1 is fine)")
    max_concurrency: int = Field(default=_D.max_concurrency, description="requests in flight per server")
    max_retries: int = Field(default=_D.max_retries, description="retries per request on network errors, 5xx and 429")
    backoff_seconds: float = Field(default=_D.backoff_seconds, description="first retry wait; doubles each retry, jittered")
    max_backoff_seconds: float = _D.max_backoff_seconds
    timeout_seconds: float = Field(default=_D.timeout_seconds, description="one request (n samples) may take this long")
    api_key: str | None = Field(default=None, description="the servers' --api-key, as EnvVar(...); none when unset")
    served_model_names: dict[str, str] = Field(
        default_factory=dict,
        description="checkpoint directory name -> served model id, for servers started with another --served-model-name",
    )

    def options(self, model_path: str) -> RemoteOptions:
        return RemoteOptions(
            max_concurrency=self.max_concurrency,
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
            timeout_seconds=self.timeout_seconds,
            api_key=self.api_key or None,
            served_model_name=self.served_model_names.get(Path(model_path).name),
        )

    def build_engine(self, model_path: str) -> RemoteEngine:
        return RemoteEngine(self.base_urls, model_path, self.options(model_path))


def engine_resource_from_env() -> RolloutEngineResource:
    """``RemoteVLLMResource`` over ``$FIXABILITY_VLLM_URLS`` (comma-separated) when it is set, else the in-process
    ``VLLMResource``. The key is ``EnvVar(FIXABILITY_VLLM_API_KEY)`` when that variable is set where the code loads."""
    urls = [u.strip() for u in os.environ.get(URLS_ENV, "").split(",") if u.strip()]
    for url in urls:  # fail when the code location loads, not at the first rollout step
        try:
            normalize_base_url(url)
        except ValueError as exc:
            raise ValueError(f"${URLS_ENV}: {exc}") from exc
    if not urls:
        return VLLMResource()
    return RemoteVLLMResource(base_urls=urls, api_key=EnvVar(API_KEY_ENV) if os.environ.get(API_KEY_ENV) else None)
