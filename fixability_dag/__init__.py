"""fixability-dag: audit LLM checkpoints for recoverable reasoning failures from the distribution of many rollouts.

The package is cut in layers; each may import only the layers below it (``make test`` checks this with
import-linter, see ``[tool.importlinter]`` in pyproject.toml), from the top:

- ``cli``, ``definitions``: the command line and the one Dagster ``Definitions`` of the code location;
- ``orchestration``: jobs, the checkpoint sensor, the nightly schedule (over the top-level ``assets``/``resources``);
- ``pipeline``: the Dagster-free audit stages, their configuration, reports and plots;
- ``storage`` (results database), ``engines`` (vLLM in-process and remote), ``inputs`` (problem files, checkpoints);
- ``core``: the pure science (problems, answers, interventions, sampling protocol, features, regimes, routing,
  rescue, statistics), with no I/O and no Dagster.

``testing`` holds utilities for the test suite, benchmarks and reports (scratch databases, planted data); nothing
in the layers above imports it.
"""
