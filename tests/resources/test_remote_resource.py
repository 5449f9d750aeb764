"""RemoteVLLMResource as Dagster sees it: chosen by FIXABILITY_VLLM_URLS, accepted where assets ask for the common
base class, key read from the environment, engines closed when the run ends."""

from __future__ import annotations

import pytest
from dagster import asset, materialize

from fixability_dag.engines.remote import RemoteEngine
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


def test_the_api_key_and_served_names_come_from_env_and_mapping(monkeypatch):
    resource = RemoteVLLMResource(base_urls=["http://h:1"], api_key_env="MY_KEY", served_model_names={SERVED_CHECKPOINT.name: "nightly"})
    monkeypatch.delenv("MY_KEY", raising=False)
    assert resource.options(str(SERVED_CHECKPOINT)).api_key is None
    monkeypatch.setenv("MY_KEY", "s3cret")
    options = resource.options(str(SERVED_CHECKPOINT))
    assert options.api_key == "s3cret" and options.served_model_name == "nightly"
    assert resource.options("/elsewhere/other-checkpoint").served_model_name is None
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
    assert isinstance(seen["engine"], RemoteEngine) and seen["engine"]._client.is_closed  # closed at teardown
