"""Quiet by default: the engine's chatter and library warnings off unless ``FIXABILITY_LOG_LEVEL`` asks for them.

One CPU audit printed 343 lines, 253 of them vLLM INFO lines (every engine argument, thread binding, KV cache size,
shutdown steps, from three processes), torch's ``FutureWarning`` about ``reduce_op``, a C++ "NUMA binding" notice
and a weight-loading progress bar; the one useful error was lost among them. vLLM starts its engine-core and worker
processes with ``spawn``, so in-process logger levels never reach them: the settings go into the environment the
children inherit (``VLLM_LOGGING_LEVEL``, ``TORCH_CPP_LOG_LEVEL``, ``PYTHONWARNINGS``) before vLLM is imported,
and into this process's loggers and warning filters. A variable the user exported wins over ours.

``FIXABILITY_LOG_LEVEL=INFO`` (or ``DEBUG``) brings everything back, and with it the full chain of an engine error's
causes (vLLM's internal traceback); by default an engine error is raised once, its message naming the cause's type
and text and what to change (:func:`engine_error`).
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSITY_ENV = "FIXABILITY_LOG_LEVEL"
QUIET_ENV = {"VLLM_LOGGING_LEVEL": "ERROR", "TORCH_CPP_LOG_LEVEL": "ERROR"}
"""vLLM's own loggers, and c10's C++ warnings (the NUMA notice), in every engine process."""
QUIET_WARNINGS = ("ignore::FutureWarning", "ignore::DeprecationWarning",
                  "ignore::UserWarning:multiprocessing.resource_tracker")
"""Library deprecations the user cannot act on, and the shared-memory notice vLLM's shutdown leaves behind."""


def verbose() -> bool:
    """Did the user ask for the engine's own logs (``FIXABILITY_LOG_LEVEL=INFO`` or ``DEBUG``)?"""
    return os.environ.get(VERBOSITY_ENV, "").strip().upper() in ("INFO", "DEBUG")


def quiet_engine() -> None:
    """Silence vLLM, torch and library warnings here and in the engine processes spawned after this call."""
    if verbose():
        os.environ.setdefault("VLLM_LOGGING_LEVEL", os.environ[VERBOSITY_ENV].strip().upper())
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    ours = [w for w in QUIET_WARNINGS if w not in os.environ.get("PYTHONWARNINGS", "")]
    # the last filter listed wins, so the user's own PYTHONWARNINGS stays after ours
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [*ours, os.environ.get("PYTHONWARNINGS")]))
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    level = logging.getLevelName(os.environ["VLLM_LOGGING_LEVEL"].strip().upper())
    if isinstance(level, int):  # an unknown name is vLLM's to refuse, not ours
        logging.getLogger("vllm").setLevel(level)


def engine_error(error: Exception, cause: BaseException) -> Exception:
    """``error`` (whose message already names ``cause``) ready to raise once: the cause's own traceback, 100 lines
    of vLLM internals repeating the same text, is attached only when :func:`verbose`."""
    if verbose():
        error.__cause__ = cause
    else:
        error.__cause__, error.__suppress_context__ = None, True
    return error
