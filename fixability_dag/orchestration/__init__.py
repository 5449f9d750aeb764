"""The Dagster side: jobs, the checkpoint sensor and the nightly schedule, over the top-level assets and resources.

May import everything below it and Dagster; only definitions and the CLI import it.
"""
