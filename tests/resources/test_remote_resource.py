"""RemoteVLLMResource as Dagster sees it: chosen by FIXABILITY_VLLM_URLS, accepted where assets ask for the common
base class, key read from the environment, engines closed when the run ends."""

from __future__ import annotations

import pytest
from dagster import EnvVar, asset, materialize

from fixability_dag.engines.remote import RemoteEngine
from fixability_dag.engines.tools import ToolEngine
from resources import RemoteVLLMResource, RolloutEngineResource, VLLMResource, engine_resource_from_env

from tests.support import SERVED_CHECKPOINT, FlakyServer, requests


def test_the_env_var_picks_the_remote_resource(monkeypatch):
    monkeypatch.delenv("FIXABILITY_VLLM_URLS", raising=False)
    assert type(engine_resource_from_env()) is VLLMResource
    monkeypatch.setenv("FIXABILITY_VLLM_URLS", " http://gpu-1:8000, http://gpu-2:8000/v1 ,")
    resource = engine_resource_from_env()
    assert isinstance(resource, RemoteVLLMResource) and resource.base_urls == ["http://gpu-1:8000", "http://gpu-2:8000/v1"]
    monkeypatch.setenv("FIXABILITY_VLLM_URLS", "http://gpu-1:8000,gpu-2:8000")
    with pytest.raises(ValueError, match=r"\$FIXABILITY_VLLM_URLS: base URL 'gpu-2:8000'"):
        engine_resource_from_env()


def test_the_api_key_is_an_env_var_read_at_run_time_and_served_names_map(monkeypatch):
    monkeypatch.setenv("MY_KEY", "s3cret")
    resource = RemoteVLLMResource(base_urls=["http://h:1"], api_key=EnvVar("MY_KEY"),
                                  served_model_names={SERVED_CHECKPOINT.name: "nightly"})
    assert "s3cret" not in repr(resource)
    seen = {}

    @asset
    def options(vllm: RemoteVLLMResource) -> None:
        seen["mine"], seen["other"] = vllm.options(str(SERVED_CHECKPOINT)), vllm.options("/elsewhere/other-checkpoint")

    assert materialize([options], resources={"vllm": resource}).success
    assert seen["mine"].api_key == "s3cret" and seen["mine"].served_model_name == "nightly"
    assert seen["other"].served_model_name is None
    assert RemoteVLLMResource(base_urls=["http://h:1"]).options(str(SERVED_CHECKPOINT)).api_key is None


def test_the_env_picks_an_env_var_key_never_the_value(monkeypatch):
    monkeypatch.setenv("FIXABILITY_VLLM_URLS", "http://gpu-1:8000")
    monkeypatch.delenv("FIXABILITY_VLLM_API_KEY", raising=False)
    assert engine_resource_from_env().api_key is None
    monkeypatch.setenv("FIXABILITY_VLLM_API_KEY", "s3cret")
    resource = engine_resource_from_env()
    assert isinstance(resource.api_key, EnvVar) and resource.api_key.env_var_name == "FIXABILITY_VLLM_API_KEY"
    assert "s3cret" not in repr(resource)


def test_dagster_runs_an_asset_typed_with_the_base_class_on_the_remote_resource():
    seen = {}

    @asset
    def sampled(vllm: RolloutEngineResource) -> None:
        engine = vllm.engine(str(SERVED_CHECKPOINT))
        assert vllm.engine(str(SERVED_CHECKPOINT)) is engine  # one engine per checkpoint per run
        seen["engine"] = engine
        seen["out"] = engine.generate(requests(3))

    with FlakyServer() as server:
        result = materialize([sampled], resources={"vllm": RemoteVLLMResource(base_urls=[server.url])})
    assert result.success and [len(c) for c in seen["out"]] == [3, 3, 3]
    inner = seen["engine"].inner  # wrapped, so tool interventions run through the remote engine too
    assert isinstance(seen["engine"], ToolEngine) and isinstance(inner, RemoteEngine)
    assert inner._client.is_closed  # closed at teardown
