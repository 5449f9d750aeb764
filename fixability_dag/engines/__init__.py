"""Rollout engines: vLLM in-process (``inprocess``) and a fleet of ``vllm serve`` servers (``remote``), behind the
core's RolloutEngine protocol.

May import the core; never storage, inputs, pipeline or Dagster.
"""
