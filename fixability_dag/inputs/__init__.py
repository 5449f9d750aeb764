"""Inputs from the user's disk: problem files and checkpoint directories, validated with errors that name file, line
and field.

May import the core; never storage, engines, pipeline or Dagster.
"""
