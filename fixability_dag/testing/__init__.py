"""Testing utilities for the test suite, benchmarks and reports: scratch PostgreSQL databases, planted synthetic
rollouts.

May import any layer; no production module imports it.
"""
