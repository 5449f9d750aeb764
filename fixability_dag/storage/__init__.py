"""The results database: schema, store, leases, bulk writes and the Alembic migrations.

May import the core; never engines, inputs, pipeline or Dagster.
"""
