"""vLLM as a Dagster resource: one engine per checkpoint per run, shared by every asset of that run."""

from __future__ import annotations

from pydantic import Field

from fixability_dag.engines.inprocess import EngineOptions, VLLMEngine
from resources.rollout_engine import RolloutEngineResource


class VLLMResource(RolloutEngineResource):
    """Engine settings; the checkpoint path comes from the partition being audited.

    The engine is handed out lazily and kept for the rest of the run (the audit job runs its steps in one process):
    vLLM starts at the first request there is to generate, so steps whose rollouts are all stored never start it,
    and it is shut down when the run ends, success or failure.
    """

    dtype: str = Field(default="auto", description="'auto' = float32 on the CPU build, the checkpoint's dtype on GPU")
    max_model_len: int | None = Field(default=None, description="default: the checkpoint's max_position_embeddings")
    seed: int = 0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    enable_chunked_prefill: bool | None = Field(default=None, description="default: off on the CPU build (seeded requests crash it), vLLM's default on GPU")
    max_num_seqs: int | None = Field(default=None, description="default: vLLM's on GPU; sized to the KV cache on CPU")
    cpu_kvcache_space_gib: int = Field(default=4, description="CPU build only: GiB of RAM for the KV cache (VLLM_CPU_KVCACHE_SPACE)")
    cpu_threads: int | None = None

    def options(self) -> EngineOptions:
        return EngineOptions(**{f: getattr(self, f) for f in EngineOptions.__dataclass_fields__})

    def build_engine(self, model_path: str) -> VLLMEngine:
        return VLLMEngine(model_path, self.options(), start=False, on_start=self.report)
