"""User errors: mistakes in what a user handed graphode (arguments, config files,
datasets, checkpoints, output paths), as opposed to bugs.

The command line (:mod:`graphode.cli`) turns a :class:`UserError` into one line
``graphode <cmd>: error: <message>`` on stderr and exit code 2, without a
traceback (``--debug`` shows it); any other exception is an internal error and
keeps its traceback.  Each class also derives from the builtin exception a
Python caller would expect (``ValueError``, ``FileNotFoundError``), so library
code that catches those keeps working.
"""
from __future__ import annotations

__all__ = ["UserError", "ConfigError", "CheckpointError", "DataError", "OutputPathError"]


class UserError(Exception):
    """Base of the errors caused by the user's input; the message names the file,
    key or value and what was expected."""


class ConfigError(UserError, ValueError):
    """A config file, config key or ``--set`` value is wrong (unknown key, wrong type,
    out of range, unknown choice, not a mapping, YAML syntax error)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be used: missing, damaged, unsafe (it would import code), or
    written for another model / dataset."""


class DataError(UserError, FileNotFoundError):
    """A dataset is unknown, or its files are missing or unreadable."""


class OutputPathError(UserError, OSError):
    """An output or checkpoint folder cannot be created or written."""
