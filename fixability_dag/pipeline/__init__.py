"""The Dagster-free audit: configuration, the stages that chain core, engines and storage, resume planning, reports and
plots.

May import core, inputs, engines and storage; never Dagster, the assets or the resources.
"""
