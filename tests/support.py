"""Everything the tests share: tiny real inputs (databases, checkpoints, problem files), a deterministic fake engine,
small audit configurations and the helpers several test modules use. No test module imports another one.

PostgreSQL is real: each test session creates its own database on FIXABILITY_TEST_PG_URL's server (default
127.0.0.1:5432, trust auth, as on every developer and CI machine) and drops it afterwards. ``conftest.py`` only
re-exports the fixtures defined here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, build_sensor_context, materialize
from sqlalchemy.engine import make_url

from assets import CHECKPOINT_ASSETS
from assets.partitions import checkpoint_partitions
from fixability_dag.core.regimes import REGIMES
from fixability_dag.core.rescue import POLICIES, TOKEN_MATCHED
from fixability_dag.core.sampling import Completion, Decoding, GenerationRequest, prompt_share
from fixability_dag.inputs.problem_files import load_gsm8k_jsonl, load_math_jsonl
from fixability_dag.orchestration.sensors import checkpoint_sensor
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import CODE_VERSION, AuditConfig
from fixability_dag.pipeline.figure_server import FIGURE_URL_ENV
from fixability_dag.storage.store import AuditStore
from fixability_dag.testing.scratch import ScratchDatabases, reset_schema, server_url
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase, VLLMResource

REPO = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINTS = REPO / "demo" / "checkpoints"
PG_ADMIN_URL = server_url()
TEST_DATA = REPO / "tests" / "data"
GSM8K_ROWS = load_gsm8k_jsonl(TEST_DATA / "gsm8k_train_first40.jsonl")
MATH_ROWS = load_math_jsonl(TEST_DATA / "math500_first60.jsonl")
"""Real GSM8K and MATH-500 rows (MIT; attribution in tests/data/README.md), through the real loaders."""

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")


def default_signals() -> None:
    """``preexec_fn`` of a server a test stops with a signal: the child starts with SIGINT and SIGTERM at their
    defaults and nothing blocked, whatever the test process inherited (a job started in the background by a
    non-interactive shell ignores SIGINT, and an ignored or blocked signal survives ``exec``), so that Ctrl-C and
    ``terminate()`` reach it as they reach a server started from a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (free when this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_checkpoint(name: str | None = None) -> Path:
    """A committed demo checkpoint (the earliest SFT one unless named)."""
    candidates = sorted(p for p in DEMO_CHECKPOINTS.iterdir() if p.is_dir() and not p.name.endswith(".partial"))
    if name:
        return DEMO_CHECKPOINTS / name
    return next(p for p in candidates if "sft" in p.name)


ORGANISM_CHECKPOINTS = REPO / "demo" / "organism"
ORGANISM_ENV = "FIXABILITY_TEST_ORGANISM"


def organism_checkpoint(name: str | None = None) -> Path:
    """A committed model-organism checkpoint that writes GSM8K calculator annotations (its
    ``fixability_checkpoint.json`` says ``"annotations": "gsm8k"``): the named one, else the most trained one;
    ``$FIXABILITY_TEST_ORGANISM`` names another directory. Fails (does not skip) when there is none, so a missing
    checkpoint cannot pass the calculator's real-engine test unnoticed."""
    if os.environ.get(ORGANISM_ENV):
        return Path(os.environ[ORGANISM_ENV])
    if name:
        return ORGANISM_CHECKPOINTS / name
    found = []
    for meta in ORGANISM_CHECKPOINTS.glob("*/fixability_checkpoint.json"):
        info = json.loads(meta.read_text())
        if info.get("annotations") == "gsm8k":
            found.append((int(info.get("step") or 0), meta.parent.name, meta.parent))
    if not found:
        pytest.fail(f"no checkpoint under {ORGANISM_CHECKPOINTS} has \"annotations\": \"gsm8k\" in its "
                    f"fixability_checkpoint.json (set ${ORGANISM_ENV} to use another)")
    return max(found)[2]


def write_jsonl(path: Path, rows) -> Path:
    """A JSONL file of ``rows``: dicts as JSON, strings written as they are (to plant broken lines)."""
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """A fresh PostgreSQL database for this session (dropped at the end)."""
    try:
        dbs = ScratchDatabases(PG_ADMIN_URL, "fixability_test")
        url = dbs.create()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {make_url(PG_ADMIN_URL).render_as_string(hide_password=True)} is required: {exc}")
    yield url
    dbs.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """Each test using it runs twice: on a fresh SQLite file and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    url = request.getfixturevalue("pg_server_url")
    reset_schema(url)
    return url


@pytest.fixture
def store(db_url) -> AuditStore:
    s = AuditStore(db_url)
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def sqlite_store(tmp_path) -> AuditStore:
    s = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    s.migrate()
    yield s
    s.dispose()


def trained_copy(dst: Path, with_metadata: bool = False) -> Path:
    """A real demo checkpoint copied to ``dst`` as a training framework leaves one: the files vLLM loads, without
    our ``fixability_checkpoint.json`` unless asked (so the step must come from the directory name)."""
    shutil.copytree(demo_checkpoint(), dst, ignore=None if with_metadata else shutil.ignore_patterns("fixability_checkpoint.json"))
    return dst


@pytest.fixture
def checkpoint_copy(tmp_path) -> Path:
    """A writable copy of a real demo checkpoint inside a fresh checkpoint root."""
    root = tmp_path / "checkpoints"
    root.mkdir()
    src = demo_checkpoint()
    dst = root / src.name
    shutil.copytree(src, dst)
    return dst


DEMO_CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\\n\\n' }}"
                      "{% elif m['role'] == 'user' %}{{ 'Q: ' + m['content'] + '\\nA: ' }}{% else %}{{ m['content'] }}"
                      "{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endif %}{% endfor %}")
"""A chat template for the demo model, which was trained on ``Q: ...\nA: ``: a user turn renders as that frame, an
assistant turn as its content (a blank line after a finished one), so chat mode reaches the same tokens the model
knows and a few-shot conversation renders exactly as the completion-mode few-shot text. Newlines are Jinja string
literals: Hugging Face renders templates with ``trim_blocks``, which drops a newline written after a block tag."""


def chat_checkpoint(dst: Path) -> Path:
    """A copy of a real demo checkpoint whose tokenizer carries :data:`DEMO_CHAT_TEMPLATE`."""
    shutil.copytree(demo_checkpoint(), dst)
    config_path = dst / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "chat_template": DEMO_CHAT_TEMPLATE}, indent=2))
    return dst


# --- a deterministic stand-in engine for fast unit tests of the statistics (never the only test of a path:
# the same paths run on the real vLLM engine in tests/engines and tests/system) ---

AnswerSampler = Callable[[GenerationRequest, random.Random], str | None]


class FakeEngine:
    """Draws each sample's final answer from ``sampler(request, rng)``; ``None`` means a rollout with no answer.
    ``write(request, answer)`` is how the answer is stated (default ``#### answer``)."""

    def __init__(self, sampler: AnswerSampler, logprob: Callable[[GenerationRequest], float] = lambda r: -0.5,
                 write: Callable[[GenerationRequest, str], str] = lambda r, answer: f"#### {answer}",
                 count_prompt: Callable[[GenerationRequest], int] | None = None):
        """``count_prompt(request)``: the prompt tokens to report, on each request's first sample as vLLM does (0 on
        the others); without it the fake reports none, as an engine that cannot count."""
        self.sampler, self.logprob, self.write, self.count_prompt = sampler, logprob, write, count_prompt
        self.calls: list[Sequence[GenerationRequest]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.calls.append(requests)
        out = []
        for r in requests:
            rng = random.Random(r.seed)
            samples = []
            for i in range(r.n):
                answer = self.sampler(r, rng)
                body = "1+1=2\n" + (self.write(r, answer) if answer is not None else "and so on")
                tokens = len(body)
                prompt = None if self.count_prompt is None else prompt_share(self.count_prompt(r), i)
                samples.append(Completion(body, tokens, self.logprob(r) * tokens, "stop", prompt_tokens=prompt))
            out.append(samples)
        return out


# --- the fake-engine audit: known per-difficulty behaviour, every stage called directly ---

FAKE_CFG = AuditConfig(chain_lengths=(1, 2, 3, 4), templates_per_length=2, variants_per_template=2, n_samples=8,
                  probe_samples=4, retry_budget=8, intervention_budget=4, eval_budget=4,
                  cluster_seeds=2, cluster_bootstraps=3, ablation_seeds=1)
GOLD = {p.problem_id: p.gold_answer for p in FAKE_CFG.load_problems()}


def behaviour(request, rng: random.Random):
    """L1 mostly solved; L2 retry-recoverable; L3 steerable by the solution prefix; L4 structural."""
    gold = GOLD[request.problem_id]
    length = int(request.problem_id.split("-L")[1].split("-")[0])
    p_correct = {1: 0.8, 2: 0.0 if request.phase == "diagnostic" else 0.4,
                 3: 0.7 if request.intervention == "solution_prefix" and request.phase != "probe" else 0.0, 4: 0.0}[length]
    if rng.random() < p_correct:
        return gold
    if length == 2:
        return str(rng.randint(0, 999))  # wandering
    if length == 3 and request.intervention == "solution_prefix":
        return rng.choice(["1", "2", "3"])  # moved by the nudge
    return "-1" if rng.random() < 0.9 else None  # stuck


def planted(regimes: dict[str, str]) -> AnswerSampler:
    """A checkpoint that solves every problem except those in ``regimes``, each failed in the regime named there:
    never solved at base; ``retry_recoverable`` solved by retry, ``steerable_hard`` only by the solution prefix and
    ``structural`` by nothing, once rescues are measured (label and eval phases)."""
    rescuer = {"retry_recoverable": "retry", "steerable_hard": "solution_prefix", "structural": None}

    def sampler(request, rng: random.Random):
        gold = GOLD[request.problem_id]
        regime = regimes.get(request.problem_id)
        if regime is None:
            return gold
        rescued = request.phase not in ("diagnostic", "probe") and request.intervention == rescuer[regime]
        return gold if rescued and rng.random() < 0.9 else "-1"

    return sampler


def run_audit(store, engine, cfg=FAKE_CFG, checkpoint_id="ck"):
    store.register_checkpoint(checkpoint_id, "/nowhere", "fp")
    audit.snapshot_problems(store, cfg)
    diag = audit.diagnose(store, engine, checkpoint_id, cfg, "run").summary
    audit.probe(store, engine, checkpoint_id, cfg, "run")
    audit.featurize(store, checkpoint_id, cfg)
    audit.measure_rescues(store, engine, checkpoint_id, cfg, "run")
    labelled = audit.label(store, checkpoint_id, cfg)
    plan = audit.plan(store, checkpoint_id, cfg).frame
    evaluated = audit.evaluate(store, engine, checkpoint_id, cfg, "run")
    return diag, labelled.frame, labelled.summary, plan, evaluated.frame, evaluated.summary


def record_audit(store, checkpoint_id="ck", cfg=FAKE_CFG):
    """Stamp a successful audit step of ``checkpoint_id`` under ``cfg`` in ``audit_runs`` (``run_audit`` calls the
    stages directly, without the Dagster bookkeeping that records them)."""
    store.finish_run(store.start_run("r", checkpoint_id, "rescue_evaluation", CODE_VERSION, cfg.config_hash(), cfg.as_dict()),
                     "success")


@dataclasses.dataclass
class FakeAudit:
    """A SQLite database holding one fake-engine audit of checkpoint ``ck``, and the progress lines it logged."""

    path: Path
    progress: list[str]

    def copy(self, tmp_path: Path) -> AuditStore:
        """A store over a private copy (tests corrupt it on purpose)."""
        shutil.copy(self.path, tmp_path / "copy.db")
        return AuditStore(f"sqlite:///{tmp_path / 'copy.db'}")


@pytest.fixture(scope="session")
def fake_audit(tmp_path_factory) -> FakeAudit:
    """One fake-engine audit per session (about 20 s), for the tests that only read it or corrupt a copy."""
    from fixability_dag.pipeline import progress

    path = tmp_path_factory.mktemp("fake_audit") / "audit.db"
    store, lines = AuditStore(f"sqlite:///{path}"), []
    store.migrate()
    with progress.reporting(lines.append, interval=3600):
        run_audit(store, FakeEngine(behaviour))
    store.dispose()
    return FakeAudit(path, lines)


# --- two suites that reuse each other's ids ---

PER_SUITE = 8


def suite_files(tmp_path: Path) -> list[Path]:
    """Two GSM8K files, ``first.jsonl`` and ``second.jsonl`` (their suites), whose rows carry the same ids 0..7 with
    different questions and gold answers."""
    lines = (TEST_DATA / "gsm8k_train_first40.jsonl").read_text().splitlines()
    paths = []
    for name, rows in (("first", lines[:PER_SUITE]), ("second", lines[PER_SUITE : 2 * PER_SUITE])):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({**json.loads(r), "id": str(i)}) + "\n" for i, r in enumerate(rows)))
        paths.append(path)
    return paths


# --- the small real audit (vLLM on a demo checkpoint) and what every audited checkpoint must satisfy ---

TINY = dict(chain_lengths=[1, 2, 4, 6], templates_per_length=2, variants_per_template=2, n_samples=8,
            probe_samples=4, retry_budget=8, intervention_budget=4, eval_budget=4, label_block=2,
            cluster_seeds=2, cluster_bootstraps=3, ablation_seeds=1)
"""A small audit that still has failures in every regime (as run config too: ``tests/system/test_deployment.py``);
label blocks of 2 so that its small budgets (4 and 8) leave the stopping rule blocks to save."""
SETTINGS = AuditSettings(**TINY)


def check_invariants(store, key, cfg):
    n_problems = len(cfg.load_problems())
    assert store.count("problems") == n_problems
    assert store.count("rollouts", key, phase="diagnostic") == n_problems * cfg.n_samples
    features = store.read("problem_features", key)
    diag = store.read("rollouts", key, phase="diagnostic")
    failed = set(diag.groupby("problem_id")["is_correct"].sum().loc[lambda s: s == 0].index)
    assert set(features["problem_id"]) == failed and failed, "the demo checkpoint must fail some problems"
    assert features["answer_dispersion"].between(0, 1).all() and features["probe_shift"].between(0, 1).all()
    assert (features["policy_confidence"] <= 0).all()
    assert store.count("rollouts", key, phase="probe") == len(failed) * cfg.probe_samples * len(cfg.probe_interventions)
    assert store.count("probe_shifts", key) == len(failed) * len(cfg.probe_interventions)
    assert features["retry_headroom"].between(0, 1).all()
    assert store.count("intervention_outcomes", key) == len(failed) * len(cfg.interventions)
    outcomes = store.read("intervention_outcomes", key)
    assert store.count("rollouts", key, phase="label") == outcomes["samples"].sum()
    assert (outcomes["samples"] <= outcomes["budget"]).all()
    short = outcomes[outcomes["samples"] < outcomes["budget"]]  # stopped early: only ever once decided
    assert cfg.label_early_stop or short.empty
    assert (short["correct"] > 0).all() and (outcomes.loc[~outcomes["rescued"], "samples"] == outcomes.loc[~outcomes["rescued"], "budget"]).all()
    labels = store.read("regime_labels", key)
    assert set(labels["problem_id"]) == failed and set(labels["true_regime"]) <= set(REGIMES)
    plan = store.read("routing_plans", key)
    assert set(plan["problem_id"]) == failed
    assert ((plan["action"] == "skip") == (plan["budget"] == 0)).all()
    evals = store.read("rescue_evaluations", key)
    assert len(evals) == (len(POLICIES) + len(TOKEN_MATCHED)) * (1 + len(REGIMES))
    allrows = evals[(evals["regime"] == "all") & (evals["matching"] == "samples")].set_index("policy")
    assert (allrows["problems"] == len(failed)).all()
    assert allrows.loc["hindsight_oracle", "rescued"] >= allrows["rescued"].max() and allrows["rescue_rate"].between(0, 1).all()
    if len(labels) >= 6 and labels["true_regime"].nunique() >= 2:
        assert {"gmm", "kmeans", "majority_baseline"} <= set(store.read("regime_reports", key)["method"])
        assert store.count("feature_ablations", key) == 120
    runs = store.read("audit_runs", key)
    assert set(runs["asset"]) == {a.key.to_user_string() for a in CHECKPOINT_ASSETS} and (runs["status"] == "success").all()


# --- one small real audit in a persistent Dagster instance, shared by the UI and automation tests ---

@dataclasses.dataclass
class AuditedInstance:
    """A Dagster home whose instance holds a real audit of one demo checkpoint (every per-checkpoint asset and the
    topography materialized), and the SQLite results database it wrote."""

    home: Path
    db_url: str
    checkpoint_id: str
    results: list
    figure_port: int  # the asset pages link their figures at http://127.0.0.1:<figure_port> (nothing serves it yet)

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))


def real_resources(db_url: str) -> dict:
    return {"database": ResultsDatabase(url=db_url), "vllm": VLLMResource(), "settings": SETTINGS,
            "checkpoints": CheckpointDirectory(root=str(DEMO_CHECKPOINTS), settle_seconds=0)}


@pytest.fixture(scope="session")
def audited_instance(tmp_path_factory) -> AuditedInstance:
    """Audits the earliest demo checkpoint with the real vLLM engine once per session (about a minute)."""
    from assets import ALL_ASSETS

    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    db_url = f"sqlite:///{home / 'audit.db'}"
    key = demo_checkpoint().name
    figure_port, before = free_port(), os.environ.get(FIGURE_URL_ENV)
    os.environ[FIGURE_URL_ENV] = f"http://127.0.0.1:{figure_port}"  # read as the assets write their metadata
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions(checkpoint_partitions.name, [key])
            audit = materialize(CHECKPOINT_ASSETS, instance=instance, partition_key=key, resources=real_resources(db_url))
            report = materialize(ALL_ASSETS, selection=["failure_topography"], instance=instance,
                                 resources=real_resources(db_url))
    finally:
        if before is None:
            os.environ.pop(FIGURE_URL_ENV, None)
        else:
            os.environ[FIGURE_URL_ENV] = before
    assert audit.success and report.success
    return AuditedInstance(home, db_url, key, [audit, report], figure_port)


# --- sensors ---

def age(path, seconds=3600):
    old = time.time() - seconds
    for f in path.iterdir():
        os.utime(f, (old, old))


def evaluate(instance, root, cursor=None, settle=60.0, db=None, settings=None):
    db = db or f"sqlite:///{root.parent / 'sensor.db'}"
    with build_sensor_context(
        instance=instance, cursor=cursor,
        resources={"checkpoints": CheckpointDirectory(root=str(root), settle_seconds=settle),
                   "settings": settings or AuditSettings(),
                   "database": ResultsDatabase(url=db)},
    ) as context:
        return checkpoint_sensor(context)


# --- stored rollouts ---

def rollout_rows(n, correct_every=2):
    return pd.DataFrame([{
        "suite": "arith", "problem_id": "arith-L1-T0-V0", "phase": "diagnostic", "intervention": "retry", "sample_index": i, "seed": 12345,
        "text": f"t{i}", "answer": str(i) if i % 3 else None, "is_correct": i % correct_every == 0, "num_tokens": 5,
        "cumulative_logprob": -1.0, "mean_logprob": float("nan") if i == 1 else -0.2, "finish_reason": "stop", "run_id": "r",
    } for i in range(n)])


# --- a flaky OpenAI-compatible server on 127.0.0.1 for the remote engine ---

SERVED_CHECKPOINT = Path("/checkpoints/run-7/arith-sft-s0300")


class FlakyServer(ThreadingHTTPServer):
    """Answers ``/v1/models`` and ``/v1/completions``; the first ``fail_first`` completion calls fail as ``mode``
    says. Records every payload and header and the most requests it ever held at once."""

    daemon_threads = True

    def __init__(self, fail_first: int = 0, mode: str = "503", model_id: str = str(SERVED_CHECKPOINT), delay: float = 0.0,
                 drop_choice: bool = False, models_down: bool = False):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_first, self.mode, self.model_id, self.delay = fail_first, mode, model_id, delay
        self.drop_choice, self.models_down = drop_choice, models_down
        self.completion_calls = 0
        self.payloads: list[dict] = []
        self.headers_seen: list[dict] = []
        self.in_flight = self.peak_in_flight = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "FlakyServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FlakyServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path != "/v1/models":
            return self._json(404, {"error": "not found"})
        if self.server.models_down:
            return self._json(503, {"error": "starting"})
        self._json(200, {"object": "list", "data": [{"id": self.server.model_id, "root": self.server.model_id}]})

    def do_POST(self) -> None:
        s = self.server
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with s.lock:
            s.completion_calls += 1
            call = s.completion_calls
            s.payloads.append(payload)
            s.headers_seen.append(dict(self.headers))
            s.in_flight += 1
            s.peak_in_flight = max(s.peak_in_flight, s.in_flight)
        time.sleep(s.delay)
        with s.lock:  # done "computing": leave the count before answering, or the client's next request (sent the
            s.in_flight -= 1  # moment it reads this answer) could be counted beside this one
        if call <= s.fail_first:
            if s.mode == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if s.mode == "429":
                return self._json(429, {"error": "busy"}, {"Retry-After": "0.3"})
            return self._json(int(s.mode), {"error": f"injected {s.mode}"})
        n = payload["n"] - (1 if s.drop_choice else 0)
        choices = [{"index": i, "text": f"{payload['prompt']}|seed={payload['seed']}|i={i}", "finish_reason": "stop",
                    "token_ids": [5] * (i + 2), "logprobs": {"token_logprobs": [-0.25] * (i + 2)}} for i in range(n)]
        self._json(200, {"choices": list(reversed(choices))})  # out of order on purpose: the engine sorts


def requests(count: int, n: int = 3, temperature: float = 1.0) -> list[GenerationRequest]:
    return [GenerationRequest(f"p{i}", "diagnostic", "retry", f"Q{i}", n, 1000 + i, Decoding(temperature=temperature))
            for i in range(count)]
