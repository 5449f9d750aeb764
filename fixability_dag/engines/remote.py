"""A :class:`~fixability_dag.core.sampling.RolloutEngine` over one or many ``vllm serve`` servers (OpenAI-compatible API).

Why it exists: one in-process engine ties an audit to one machine. Pointing the audit at a fleet of ``vllm serve``
hosts spreads the same requests over every GPU while the results stay the same, because each request carries its
own seed: which server draws the samples does not change them (same vLLM build and hardware type assumed).

What it guarantees, and why:

* **Same fields as the in-process engine.** A request is one ``POST /v1/completions`` (a chat prompt: one
  ``POST /v1/chat/completions``, the server applying its checkpoint's chat template) with ``n`` and ``seed``
  (no seed for greedy decoding, as :class:`~fixability_dag.engines.inprocess.VLLMEngine` does), ``logprobs=0`` (the sampled
  token's logprob, summed into ``cumulative_logprob``) and ``return_token_ids`` (``num_tokens``). ``top_k``,
  ``min_p`` and the penalties are sent explicitly, so a server's ``--generation-config`` defaults cannot change the
  sampling distribution behind the audit's back.
* **The right checkpoint.** Before a server gets a request, ``GET /v1/models`` must show the audited checkpoint
  (see :func:`served_model_matches`); a server serving another one is refused with an error, because its samples
  would silently pollute the audit.
* **Load spread, bounded.** Each request goes to the verified server with the fewest requests in flight, never more
  than ``max_concurrency`` per server (vLLM batches what it holds; more would only queue on the server and make
  timeouts meaningless).
* **Flaky networks.** Connection errors, timeouts, 5xx and 429 are retried with exponential backoff and jitter,
  preferring another server (a failing server is rested for a growing cool-down); ``Retry-After`` is honoured. Other
  4xx answers (bad request, unknown model, bad key) are not retried. The last error names the request and every
  server tried.

Threads rather than asyncio: ``generate`` is called from synchronous Dagster steps (and maybe from code that
already runs an event loop), and a few dozen threads per chunk of requests are cheap next to the generation itself.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from fixability_dag.core.prompts import ChatPrompt
from fixability_dag.core.sampling import Completion, GenerationRequest, prompt_share, refuse_tool_requests
from fixability_dag.engines.inprocess import RolloutEngineError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RemoteEngineError(RolloutEngineError):
    """A remote server could not produce rollouts, or must not; the message names the server and the request."""


@dataclasses.dataclass(frozen=True)
class RemoteOptions:
    max_concurrency: int = 16  # requests in flight per server
    max_retries: int = 4  # attempts after the first, per request and per model check
    backoff_seconds: float = 1.0  # first retry waits about this long, doubling each time
    max_backoff_seconds: float = 30.0
    timeout_seconds: float = 600.0  # one request (n samples) may take this long
    connect_timeout_seconds: float = 10.0
    api_key: str | None = None  # sent as a bearer token (``vllm serve --api-key``)
    served_model_name: str | None = None  # accept exactly this served model id instead of matching the path

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_seconds < 0 or self.max_backoff_seconds < 0:
            raise ValueError("backoff_seconds and max_backoff_seconds must be >= 0")
        if self.timeout_seconds <= 0 or self.connect_timeout_seconds <= 0:
            raise ValueError("timeout_seconds and connect_timeout_seconds must be > 0")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Wait before retry number ``attempt`` (1-based): capped exponential, half of it random (so a fleet of
        clients that failed together does not come back together)."""
        cap = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return cap * (0.5 + 0.5 * rng.random())


def normalize_base_url(url: str) -> str:
    """``http://host:8000``, ``http://host:8000/`` and ``http://host:8000/v1`` all mean the same server."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base URL {url!r} is not an http(s) URL like http://127.0.0.1:8000")
    if text.endswith("/v1"):
        text = text[: -len("/v1")]
    return text


def served_model_matches(card: dict, model_path: Path, served_model_name: str | None = None) -> bool:
    """Whether one entry of ``GET /v1/models`` is the checkpoint at ``model_path``.

    With ``served_model_name``, the entry's id must be exactly that (the operator vouches for what it serves).
    Otherwise the entry's ``id`` or ``root`` (``vllm serve``'s model argument, or ``--served-model-name``) must be
    the checkpoint's path or end with the checkpoint's directory name, which is its partition key. Comparing by
    directory name rather than by full path lets GPU hosts keep checkpoints under their own mount points.
    """
    ids = [str(v) for v in (card.get("id"), card.get("root")) if v]
    if served_model_name is not None:
        return card.get("id") == served_model_name
    wanted = {str(model_path), str(model_path.resolve())}
    return any(v.rstrip("/") in wanted or Path(v.rstrip("/")).name == model_path.name for v in ids)


@dataclasses.dataclass
class _Server:
    url: str
    model: str | None = None  # the served model id to put in requests, once verified
    max_model_len: int | None = None  # the served model's context, from its model card
    in_flight: int = 0
    peak_in_flight: int = 0
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    resting_until: float = 0.0
    last_error: str | None = None
    verify_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class _Transient(Exception):
    """A failure worth retrying (network, timeout, 5xx, 429), with an optional server-requested wait."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _describe(request: GenerationRequest) -> str:
    return f"{request.problem_id}/{request.phase}/{request.intervention} (seed {request.seed}, n {request.n})"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _json_body(call, what: str, refused: str, limit: int = 300):
    """Make the HTTP call and return its JSON body: transport errors, 429 and 5xx are :class:`_Transient` (retried
    elsewhere); any other non-200 or a body that is not JSON is a :class:`RemoteEngineError` (``refused``/``what``
    name the server and the request in the message)."""
    try:
        response = call()
    except httpx.HTTPError as exc:
        raise _Transient(f"{what}: {type(exc).__name__}: {exc}") from exc
    if response.status_code in RETRYABLE_STATUS:
        raise _Transient(f"{what}: HTTP {response.status_code}: {response.text[:200]}", _retry_after(response))
    if response.status_code != 200:
        raise RemoteEngineError(f"{refused}: HTTP {response.status_code}: {response.text[:limit]}")
    try:
        return response.json()
    except ValueError as exc:
        raise RemoteEngineError(f"{refused}: not JSON: {response.text[:limit]}") from exc


class RemoteEngine:
    """Rollouts from ``vllm serve`` servers at ``base_urls``, all serving the checkpoint at ``model_path``."""

    def __init__(self, base_urls: Sequence[str], model_path: str | Path, options: RemoteOptions = RemoteOptions()):
        if isinstance(base_urls, str):
            base_urls = [base_urls]
        urls = [normalize_base_url(u) for u in base_urls]
        if not urls:
            raise ValueError("RemoteEngine needs at least one base URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"base URLs listed twice: {sorted({u for u in urls if urls.count(u) > 1})}")
        self.model_path = Path(model_path)
        self.options = options
        self.servers = [_Server(u) for u in urls]
        self._cond = threading.Condition()
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self._cancelled = threading.Event()
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        capacity = len(urls) * options.max_concurrency
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(options.timeout_seconds, connect=options.connect_timeout_seconds),
            limits=httpx.Limits(max_connections=capacity + len(urls), max_keepalive_connections=capacity),
        )
        try:
            self._verify_all()
        except BaseException:
            self._client.close()
            raise

    # -- checkpoint check -------------------------------------------------------------------------------------------

    def _verify(self, server: _Server) -> None:
        """Find the audited checkpoint among the server's models; raise :class:`RemoteEngineError` if it serves
        something else, :class:`_Transient` if it cannot be asked right now."""
        with server.verify_lock:
            if server.model is not None:
                return
            body = _json_body(
                lambda: self._client.get(f"{server.url}/v1/models", timeout=self.options.connect_timeout_seconds * 3),
                "GET /v1/models", f"{server.url}: GET /v1/models")
            try:
                cards = body["data"]
            except (KeyError, TypeError) as exc:
                raise RemoteEngineError(f"{server.url}: GET /v1/models is not an OpenAI model list: {str(body)[:300]}") from exc
            matches = [c for c in cards if served_model_matches(c, self.model_path, self.options.served_model_name)]
            if not matches:
                served = ", ".join(f"id={c.get('id')!r} root={c.get('root')!r}" for c in cards) or "nothing"
                wanted = (f"served model name {self.options.served_model_name!r}" if self.options.served_model_name
                          else f"checkpoint {self.model_path} (directory name {self.model_path.name!r})")
                raise RemoteEngineError(f"{server.url} serves {served}, not the {wanted} being audited; refusing to "
                                        f"mix its samples into this audit. Restart it on that checkpoint or remove it "
                                        f"from the URL list.")
            server.model = str(matches[0]["id"])
            if isinstance(matches[0].get("max_model_len"), int):
                server.max_model_len = matches[0]["max_model_len"]
            log.info("%s serves %s as %r", server.url, self.model_path.name, server.model)

    def _verify_all(self) -> None:
        """Check every server once, concurrently. A server that is down now stays in the list (checked again before
        its first request); one that serves the wrong checkpoint fails the engine; none reachable fails it too."""
        errors: dict[str, str] = {}

        def check(server: _Server) -> None:
            for attempt in range(1 + self.options.max_retries):
                try:
                    self._verify(server)
                    return
                except _Transient as exc:
                    errors[server.url] = str(exc)
                    if attempt < self.options.max_retries:
                        time.sleep(self._wait(attempt + 1, exc.retry_after))
            self._mark_failed(server, errors[server.url])

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            for future in [pool.submit(check, s) for s in self.servers]:
                future.result()  # re-raises a wrong-checkpoint error
        if not any(s.model for s in self.servers):
            detail = "; ".join(f"{u}: {e}" for u, e in errors.items())
            raise RemoteEngineError(f"no vLLM server reachable for {self.model_path.name} after "
                                    f"{1 + self.options.max_retries} attempts each: {detail}")
        for url, error in errors.items():
            if not next(s for s in self.servers if s.url == url).model:
                log.warning("vLLM server %s is down (%s); it gets requests only once it answers", url, error)

    # -- scheduling -------------------------------------------------------------------------------------------------

    def _wait(self, attempt: int, retry_after: float | None = None) -> float:
        with self._rng_lock:
            wait = self.options.backoff(attempt, self._rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.options.max_backoff_seconds))
        return wait

    def _acquire(self, avoid: set[str]) -> _Server:
        """Block until some server has room; prefer servers that are not resting, not just failed for this
        request, and have the fewest requests in flight."""
        with self._cond:
            while True:
                if self._cancelled.is_set():
                    raise RemoteEngineError("cancelled: another request of this batch failed")
                now = time.monotonic()
                free = [s for s in self.servers if s.in_flight < self.options.max_concurrency]
                ready = [s for s in free if s.resting_until <= now]
                fresh = [s for s in ready if s.url not in avoid] or ready
                if fresh:
                    server = min(fresh, key=lambda s: (s.model is None, s.in_flight, s.sent))
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                    server.sent += 1
                    return server
                wake = min((s.resting_until for s in free), default=now + 1.0)
                self._cond.wait(timeout=max(0.01, min(1.0, wake - now)))

    def _release(self, server: _Server, error: str | None = None, rest: bool = True) -> None:
        """Give the slot back; a transient ``error`` rests the server, a request's own fault (``rest=False``) only
        counts."""
        with self._cond:
            server.in_flight -= 1
            if error is None:
                server.succeeded += 1
                server.consecutive_failures = 0
                server.resting_until = 0.0
            elif rest:
                self._mark_failed(server, error)
            else:
                server.failed += 1
                server.last_error = error
            self._cond.notify_all()

    def _mark_failed(self, server: _Server, error: str) -> None:
        server.failed += 1
        server.consecutive_failures += 1
        server.last_error = error
        server.resting_until = time.monotonic() + self._wait(server.consecutive_failures)

    # -- one request ------------------------------------------------------------------------------------------------

    def _payload(self, request: GenerationRequest, model: str) -> dict:
        """The request body: ``/v1/completions`` for a text prompt, ``/v1/chat/completions`` (the server renders its
        checkpoint's chat template; a final assistant message is continued) for a chat prompt, same sampling."""
        d = request.decoding
        sampling = {
            "model": model,
            "n": request.n,
            "seed": None if d.greedy else request.seed,
            "temperature": d.temperature,
            "top_p": d.top_p,
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "max_tokens": d.max_tokens,
            "stop": list(d.stop) or None,
            "return_token_ids": True,
        }
        prompt = request.prompt
        if isinstance(prompt, ChatPrompt):
            return {**sampling, "messages": prompt.as_dicts(), "add_generation_prompt": prompt.add_generation_prompt,
                    "continue_final_message": prompt.continue_final_message, "logprobs": True, "top_logprobs": 0}
        return {**sampling, "prompt": prompt, "logprobs": 0}

    def _post(self, server: _Server, request: GenerationRequest) -> list[Completion]:
        self._verify(server)
        path = "/v1/chat/completions" if isinstance(request.prompt, ChatPrompt) else "/v1/completions"
        body = _json_body(
            lambda: self._client.post(f"{server.url}{path}", json=self._payload(request, server.model)),
            f"POST {path}", f"{server.url} refused request {_describe(request)}", limit=500)
        return parse_completions(body, request, server.url)

    def _tokenize(self, server: _Server, request: GenerationRequest) -> int:
        """The prompt's length as the server's tokenizer (and chat template) counts it: ``POST /tokenize``."""
        self._verify(server)
        prompt = request.prompt
        payload = ({"model": server.model, "messages": prompt.as_dicts(), "add_generation_prompt": prompt.add_generation_prompt,
                    "continue_final_message": prompt.continue_final_message} if isinstance(prompt, ChatPrompt)
                   else {"model": server.model, "prompt": prompt})
        body = _json_body(lambda: self._client.post(f"{server.url}/tokenize", json=payload), "POST /tokenize",
                          f"{server.url} refused to tokenize request {_describe(request)}", limit=500)
        if not isinstance(body, dict) or not isinstance(body.get("count"), int):
            raise RemoteEngineError(f"{server.url}: POST /tokenize for {_describe(request)} has no token count: {str(body)[:300]}")
        if isinstance(body.get("max_model_len"), int):
            server.max_model_len = body["max_model_len"]
        return body["count"]

    @property
    def max_model_len(self) -> int:
        """The smallest context among the verified servers (``max_model_len`` of their model cards)."""
        lengths = [s.max_model_len for s in self.servers if s.model is not None and s.max_model_len]
        if not lengths:
            raise RemoteEngineError(f"no server of {self.model_path.name} reported its max_model_len "
                                    "(GET /v1/models of a vLLM server does)")
        return min(lengths)

    def prompt_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Each request's prompt length in tokens, counted by the servers (retried like generation)."""
        return self._map(requests, lambda server, request: self._tokenize(server, request))

    def _run(self, request: GenerationRequest, call):
        """``call(server, request)`` (generate or tokenize) on the least loaded server, retried on transient errors."""
        tried: list[str] = []
        avoid: set[str] = set()
        attempts = 1 + self.options.max_retries
        for attempt in range(1, attempts + 1):
            server = self._acquire(avoid)
            try:
                completions = call(server, request)
            except _Transient as exc:
                self._release(server, str(exc))
                tried.append(f"{server.url}: {exc}")
                avoid.add(server.url)
                if attempt < attempts:
                    wait = self._wait(attempt, exc.retry_after)
                    log.warning("request %s failed on %s (%s); retry %d/%d in %.1f s", _describe(request), server.url,
                                exc, attempt, attempts - 1, wait)
                    if self._cancelled.wait(wait):
                        raise RemoteEngineError("cancelled: another request of this batch failed") from exc
                continue
            except BaseException as exc:
                self._release(server, f"{type(exc).__name__}: {exc}", rest=False)
                raise
            self._release(server)
            return completions
        raise RemoteEngineError(f"request {_describe(request)} failed after {attempts} attempts: " + "; ".join(tried))

    # -- the RolloutEngine protocol ---------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """``n`` completions per request, in request order; the first request that fails for good fails the batch
        (the others are cancelled) with its error."""
        return self._map(requests, self._post)

    def _map(self, requests: Sequence[GenerationRequest], call) -> list:
        """``call`` on every request across the servers, results in request order; the first request that fails
        for good fails the batch (the others are cancelled) with its error, which names that request."""
        if not requests:
            return []
        refuse_tool_requests(requests, "RemoteEngine")
        self._cancelled.clear()
        workers = min(len(requests), len(self.servers) * self.options.max_concurrency)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vllm-remote")
        futures = [pool.submit(self._run, r, call) for r in requests]
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is None:
            pool.shutdown()
            return [f.result() for f in futures]
        # fail now: queued requests are dropped, waiting ones wake up and stop; requests already on a server finish
        # in the background (their answers are discarded) instead of holding the error back until their timeout
        self._cancelled.set()
        with self._cond:
            self._cond.notify_all()
        pool.shutdown(wait=False, cancel_futures=True)
        raise failed.exception()

    def stats(self) -> dict[str, dict]:
        """Per server: requests sent, succeeded, failed, peak in flight, whether verified, last error."""
        with self._cond:
            return {s.url: {"sent": s.sent, "succeeded": s.succeeded, "failed": s.failed, "peak_in_flight": s.peak_in_flight,
                            "model": s.model, "last_error": s.last_error} for s in self.servers}

    def close(self) -> None:
        self._client.close()


def parse_completions(body: dict, request: GenerationRequest, server: str = "server") -> list[Completion]:
    """The ``n`` choices of one completion response as :class:`Completion` s, refusing anything malformed (wrong
    count, missing or repeated indices, no token ids or logprobs) rather than guessing."""
    where = f"{server} answered request {_describe(request)}"
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list):
        raise RemoteEngineError(f"{where} without a 'choices' list")
    indices = sorted(c.get("index") for c in choices if isinstance(c, dict) and isinstance(c.get("index"), int))
    if indices != list(range(request.n)):
        raise RemoteEngineError(f"{where} with choice indices {indices}, expected 0..{request.n - 1}")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None
    out = []
    for choice in sorted(choices, key=lambda c: c["index"]):
        logprobs = choice.get("logprobs") or {}
        if "message" in choice:  # /v1/chat/completions: per-token entries under logprobs.content
            message = choice.get("message") or {}
            text = message.get("content")
            if isinstance(message.get("reasoning"), str) and message["reasoning"]:  # a server-side reasoning parser
                text = f"<think>{message['reasoning']}</think>{text or ''}"  # split it off: keep both, as generated
            token_logprobs = [entry.get("logprob") for entry in logprobs.get("content") or []] or None
        else:
            text = choice.get("text")
            token_logprobs = logprobs.get("token_logprobs")
        token_ids = choice.get("token_ids")
        if token_ids is not None:
            num_tokens = len(token_ids)
        elif token_logprobs is not None:
            num_tokens = len(token_logprobs)
        else:
            raise RemoteEngineError(f"{where}: choice {choice['index']} has neither token_ids nor logprobs "
                                    f"(a vLLM server with 'return_token_ids' and 'logprobs' support is required)")
        cumulative = None if token_logprobs is None else float(sum(lp for lp in token_logprobs if lp is not None))
        if not isinstance(text, str):
            raise RemoteEngineError(f"{where}: choice {choice['index']} has no text")
        stop_reason = choice.get("stop_reason")  # vLLM's extension: the stop string matched (a token id is not one)
        out.append(Completion(text=text, num_tokens=num_tokens, cumulative_logprob=cumulative,
                              finish_reason=choice.get("finish_reason"),
                              stop_reason=stop_reason if isinstance(stop_reason, str) else None,
                              prompt_tokens=prompt_share(prompt, choice["index"])))  # usage: once for the n
    return out
