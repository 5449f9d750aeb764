"""fixability-dag: audit LLM checkpoints for recoverable reasoning failures from the distribution of many rollouts.

The modules here are the pure logic (no Dagster import): problems, answers, sampling, interventions, features,
regimes, routing, rescue, stats, schema, store, engine and the audit stages that chain them. ``definitions``,
``jobs``, ``sensors`` and ``schedules`` are the Dagster side, beside the top-level ``assets`` and ``resources``.
"""
