"""The reliability harnesses: real audit runs killed and resumed, raced on one database, fed bad inputs.

``tests/system/test_kill_resume.py`` and ``tests/system/test_bad_inputs.py`` assert on what they find;
``python -m scripts.reliability_report`` prints it (docs/reliability.md). Testing utilities: no production module
imports them.
"""
