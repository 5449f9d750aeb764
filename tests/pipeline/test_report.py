import re

from fixability_dag.core.features import ALL_FEATURES
from fixability_dag.core.regimes import feature_ablation
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.report import pooled_lifts, results_markdown

from tests.support import FakeEngine, behaviour, run_audit


def test_results_markdown_from_the_database(sqlite_store):
    run_audit(sqlite_store, FakeEngine(behaviour), checkpoint_id="ck")
    run_audit(sqlite_store, FakeEngine(behaviour), checkpoint_id="other")
    transfers = audit.transfer(sqlite_store)
    assert sorted(zip(transfers["source_checkpoint"], transfers["target_checkpoint"])) == [("ck", "other"), ("other", "ck")]
    assert transfers["transfer_accuracy"].between(0, 1).all() and sqlite_store.count("regime_transfers") == 2
    assert sqlite_store.count("feature_ablations", "ck") == 120
    assert set(sqlite_store.read("regime_reports", "ck")["method"]) >= {"gmm", "kmeans", "majority_baseline"}
    text = results_markdown(sqlite_store)
    for heading in ("## Regime recovery", "## Rescue at equal samples", "## Rescue at equal generated tokens",
                    "## Pooled over checkpoints", "## Label phase cost", "## Topography", "## Transfer", "## Feature ablation"):
        assert heading in text
    stored = sqlite_store.read("rescue_evaluations")
    evals = stored[(stored["checkpoint_id"] == "ck") & (stored["matching"] == "samples")].set_index(["policy", "regime"])
    rate = evals.loc[("hindsight_oracle", "all"), "rescue_rate"]
    assert re.search(rf"^\|\s*ck\s*\|\s*hindsight_oracle\s*\|\s*{100 * rate:.1f}%\s*\|", text, re.M)
    tokens = stored[(stored["matching"] == "tokens") & (stored["policy"] == "routed") & (stored["regime"] == "all")]
    for r in tokens.itertuples():  # each checkpoint's token-matched row: the retry samples it was given
        assert re.search(rf"^\|\s*{r.checkpoint_id}\s*\|\s*routed\s*\|\s*{r.policy_tokens}\s*\|\s*{r.retry_samples}\s*\|", text, re.M)
    # pooled: the cells of both checkpoints added, over all their problems
    [pooled] = [row for row in pooled_lifts(stored) if row["matching"] == "samples" and row["regime"] == "all"]
    routed = stored[(stored["matching"] == "samples") & (stored["policy"] == "routed") & (stored["regime"] == "all")]
    assert pooled["checkpoints"] == 2 and pooled["problems"] == routed["problems"].sum()
    assert pooled["routed only / retry only"] == f"{int(routed['pairs_policy_only'].sum())} / {int(routed['pairs_retry_only'].sum())}"
    assert "84.3" in text  # the preprint's figure stands beside ours


def test_feature_ablation_ranks_every_triple(sqlite_store):
    run_audit(sqlite_store, FakeEngine(behaviour), checkpoint_id="ck")
    table = feature_ablation(sqlite_store.read("problem_features", "ck"), sqlite_store.read("regime_labels", "ck"), ALL_FEATURES)
    n = len(ALL_FEATURES)
    assert len(table) == n * (n - 1) * (n - 2) // 6
    # ranked on one half, scored on the other: the order follows the selecting half, not the reported accuracy
    assert table["selection_accuracy"].is_monotonic_decreasing and table["accuracy"].between(0, 1).all()
