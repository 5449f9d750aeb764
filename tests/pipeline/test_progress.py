"""Progress lines come at a bounded rate, say how far and how fast, and reach whoever the caller names."""

from fixability_dag.pipeline import progress
from fixability_dag.pipeline.progress import Progress

from tests.support import FAKE_CFG


def test_lines_are_bounded_in_rate_and_end_with_the_last_request():
    lines, now = [], [0.0]
    with progress.reporting(lines.append, interval=10):
        p = Progress("diagnostic", total=100, kept=20, clock=lambda: now[0])
        for _ in range(10):  # one chunk of 10 requests every 2 s: 20 s in all
            now[0] += 2
            p.advance(10, [{"num_tokens": 5}] * 40)
    assert lines[0] == "diagnostic: generating 100 requests (20 kept from an earlier run)"
    assert len(lines) == 1 + 2  # at 10 s, and the last request at 20 s
    assert lines[1].startswith("diagnostic: 50/100 requests (50%), 200 rollouts, 100 tokens/s, 10 s elapsed, ~10 s left")
    assert lines[-1].endswith("20 s elapsed, done")


def test_an_audit_reports_every_generating_phase(fake_audit):
    lines = fake_audit.progress
    finished = [line.split(":")[0] for line in lines if line.endswith("done")]
    assert finished == ["diagnostic", "probe", "label", "eval"]
    n = len(FAKE_CFG.load_problems())
    assert f"diagnostic: {n}/{n} requests (100%), {n * FAKE_CFG.n_samples} rollouts" in lines[1]


def test_every_progress_line_reads_back_as_what_it_says():
    lines, now = [], [0.0]
    with progress.reporting(lines.append, interval=10):
        p = Progress("label", total=100, kept=3, clock=lambda: now[0])
        for _ in range(5):
            now[0] += 6
            p.advance(10, [{"num_tokens": 7}] * 20)
        p.finish()  # stopped at 50 of at most 100
        Progress("eval", total=4, clock=lambda: now[0]).advance(4, [{"num_tokens": 1}])
    updates = [progress.parse(line) for line in lines]
    assert updates[0] == progress.Update("label", 0, 100)
    assert updates[1] == progress.Update("label", 20, 100, 40, round(40 * 7 / 12), 48.0)
    assert updates[-3] == progress.Update("label", 50, 100, 100, final=True) and updates[-3].fraction == 1.0
    assert updates[-1].final and (updates[-1].phase, updates[-1].done, updates[-1].total) == ("eval", 4, 4)
    assert updates[1].fraction == 0.2 and not updates[1].final
    assert [u.phase for u in updates] == ["label"] * (len(lines) - 2) + ["eval"] * 2
    assert progress.parse("lease of checkpoint ck: taken over") is None
    assert progress.parse("diagnostic: 5/10 requests, weird") is None
