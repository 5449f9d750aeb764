"""The calculator tool on the real in-process vLLM engine (CPU build), on a model-organism checkpoint that writes
GSM8K annotations (``<<57+3=60>>60``, one step a line, ``#### answer``): a product the model cannot compute comes
out right when the calculator computes it, and wrong without."""

from __future__ import annotations

import random

import pytest

from fixability_dag.core.interventions import build_requests
from fixability_dag.core.problems import Problem, problems_by_id
from fixability_dag.core.sampling import Decoding, generate_rollouts
from fixability_dag.engines.inprocess import EngineOptions, VLLMEngine
from fixability_dag.engines.tools import ToolEngine

from tests.support import organism_checkpoint

pytestmark = pytest.mark.vllm


def product_problems(count: int = 12, seed: int = 5) -> list[Problem]:
    """Chains like the organism's numeric family: ``+``/``-`` steps, then ``*`` a two-digit number (last)."""
    rng = random.Random(seed)
    problems = []
    for i in range(count):
        numbers = [rng.randint(10, 99), rng.randint(1, 9), rng.randint(11, 99)]
        first = rng.choice("+-")
        total = numbers[0] + numbers[1] if first == "+" else numbers[0] - numbers[1]
        product = total * numbers[2]
        steps = (f"<<{numbers[0]}{first}{numbers[1]}={total}>>{total}", f"<<{total}*{numbers[2]}={product}>>{product}")
        problems.append(Problem(f"product-{i:02d}", "products", f"{numbers[0]}{first}{numbers[1]}*{numbers[2]}",
                                str(product), steps, 2))
    return problems


PROBLEMS = product_problems()


@pytest.fixture(scope="module")
def engine():
    e = ToolEngine(VLLMEngine(organism_checkpoint(), EngineOptions()))
    yield e
    e.close()


def test_the_calculator_turns_wrong_products_right(engine):
    greedy = Decoding(temperature=0.0, max_tokens=96)
    by_id = problems_by_id(PROBLEMS)
    without = generate_rollouts(engine, build_requests(PROBLEMS, "greedy", "label", 1, greedy, seed=1), by_id)
    with_tool = generate_rollouts(engine, build_requests(PROBLEMS, "calculator", "label", 1, greedy, seed=1), by_id)
    assert (without["tool_calls"] == 0).all() and with_tool["tool_calls"].sum() >= len(PROBLEMS)
    both = without.merge(with_tool, on="problem_id", suffixes=("_plain", "_tool"))
    changed = both[~both["is_correct_plain"] & both["is_correct_tool"]]
    assert len(changed) >= 1, both[["problem_id", "text_plain", "text_tool"]].to_string()
    for row in changed.itertuples():
        p = by_id[row.problem_id]
        assert row.tool_calls_tool >= 1
        assert p.reference_steps[-1].split(">>")[0] + ">>" in row.text_tool  # the product as the tool wrote it
        assert row.answer_plain != row.answer_tool == p.gold_answer


def test_sampled_tool_rollouts_are_reproducible_per_sample(engine):
    requests = build_requests(PROBLEMS[:4], "calculator", "label", 4, Decoding(max_tokens=96), seed=3)
    first = engine.generate(requests)
    assert engine.generate(list(reversed(requests)))[::-1] == first  # another batch order, the same samples
    flat = [c for group in first for c in group]
    assert all(c.tool_calls >= 1 and 1 <= c.num_tokens <= 96 for c in flat)
    assert len({c.text for c in flat}) > 1


SMALL_ORGANISM = (("control", 3), ("numeric", 4), ("format", 3), ("long", 2))


def test_the_gate_table_reads_a_real_organism_audit(engine, sqlite_store, monkeypatch):
    """A small audit of organism problems on the real engine, calculator included: the gate table has one row per
    audited family, its pass rates are the stored diagnostic rollouts', its failed counts are the labelled
    problems', and a rescue share exists for every label intervention (the calculator's among them)."""
    import dataclasses

    from fixability_dag.core import organism
    from fixability_dag.pipeline import config as config_module
    from fixability_dag.pipeline.config import AuditConfig
    from fixability_dag.pipeline.gate import gate_markdown, gate_table

    from tests.support import run_audit

    monkeypatch.setattr(config_module, "organism_suite",
                        lambda spec: organism.organism_suite(dataclasses.replace(spec, counts=SMALL_ORGANISM)))
    cfg = AuditConfig(problem_format="organism", n_samples=4, max_tokens=128, probe_samples=2,
                      probe_intervention="few_shot", probe_interventions=("few_shot", "calculator"),
                      interventions=("retry", "few_shot", "calculator"),
                      retry_budget=4, intervention_budget=4, label_block=4, eval_budget=2, eval_retry_samples=4,
                      cluster_seeds=1, cluster_bootstraps=0, ablation_seeds=1, null_permutations=10,
                      baseline_null_permutations=2)
    run_audit(sqlite_store, engine, cfg)
    gate = gate_table(sqlite_store).set_index("family")
    assert list(gate.index) == [f for f, _ in SMALL_ORGANISM]
    diagnostic = sqlite_store.read("rollouts", "ck", phase="diagnostic")
    family = diagnostic["problem_id"].str.split("-").str[1]
    assert gate["pass_rate"].to_dict() == pytest.approx(diagnostic.groupby(family)["is_correct"].mean().to_dict())
    labels = sqlite_store.read("regime_labels", "ck")
    assert gate["failed"].sum() == len(labels) and gate.loc["numeric", "failed"] == 4  # no numeric is solved
    assert {"rescued_retry", "rescued_few_shot", "rescued_calculator"} <= set(gate.columns)
    assert sqlite_store.read("intervention_outcomes", "ck").query("intervention == 'calculator'")["tool_calls"].sum() > 0
    assert "| numeric" in gate_markdown(gate.reset_index())
