"""The common base of the rollout-engine resources, so the asset graph does not care where samples come from.

The generating assets ask their ``vllm`` resource for ``engine(model_path)`` and use nothing else. Any subclass of
:class:`RolloutEngineResource` can stand there: :class:`~resources.vllm_engine.VLLMResource` loads the checkpoint
into this process, :class:`~resources.remote_vllm.RemoteVLLMResource` talks to ``vllm serve`` servers. Which one a
deployment uses is decided in ``fixability_dag/definitions.py`` (``FIXABILITY_VLLM_URLS``), never in an asset.

Whichever it is, the engine handed out is wrapped in :class:`~fixability_dag.engines.tools.ToolEngine`, so tool
interventions (the ``calculator``) run through both; every other request reaches the engine unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from fixability_dag.core.sampling import RolloutEngine
from fixability_dag.engines.tools import ToolEngine


class RolloutEngineResource(ConfigurableResource):
    """Hands out one engine per checkpoint per run, kept for the rest of the run and closed when the run ends
    (success or failure). Subclasses say how to build an engine in :meth:`build_engine`.

    Handing out an engine must cost nothing the step may not need: the in-process engine is lazy (vLLM starts at
    the first request there is to generate, see :class:`~fixability_dag.engines.inprocess.VLLMEngine`), so a step
    whose rollouts are all stored starts none; a remote engine only asks its servers what they serve. ``log``, when
    given, is told whatever the engine reports about itself (that it started, and how long it took): the asset
    passes its step's log, so the run's logs say which step started the engine, and no log line means none did."""

    _engines: dict = PrivateAttr(default_factory=dict)
    _log: list = PrivateAttr(default_factory=list)

    def build_engine(self, model_path: str) -> RolloutEngine:
        raise NotImplementedError(f"{type(self).__name__} must implement build_engine(model_path)")

    def report(self, message: str) -> None:
        """Pass an engine's message to the log of the step that asked for the engine last."""
        if self._log:
            self._log[-1](message)

    def engine(self, model_path: str, log: Callable[[str], None] | None = None) -> RolloutEngine:
        if log is not None:
            self._log[:] = [log]
        if model_path not in self._engines:
            for other in list(self._engines):  # one checkpoint per run: never keep two engines around
                _close(self._engines.pop(other))
            self._engines[model_path] = ToolEngine(self.build_engine(model_path))
        return self._engines[model_path]

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        for engine in self._engines.values():
            _close(engine)
        self._engines.clear()


def _close(engine: RolloutEngine) -> None:
    close = getattr(engine, "close", None)  # the RolloutEngine protocol does not require it
    if close is not None:
        close()
