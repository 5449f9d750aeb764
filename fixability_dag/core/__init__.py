"""The science core: problems, answers, interventions, sampling protocol, features, regimes, routing, rescue, stats.

Pure functions and dataclasses; imports only the standard library, numpy/pandas/scipy/scikit-learn and itself (no
I/O layer, no Dagster).
"""
