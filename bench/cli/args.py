"""Argument parsing of the verbs that take plain ``key=value`` arguments (aggregate, latency)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def key_values(argv: list[str], accepted: tuple[str, ...]) -> dict[str, str] | str:
    """``key=value`` arguments of the non-Hydra verbs as a dict, or the one-line error of the first bad one."""
    args: dict[str, str] = {}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in accepted:
            return f"unknown argument {a!r}; accepted: {', '.join(k + '=' for k in accepted)}"
        if not value:
            return f"{key}= needs a value"
        args[key] = value
    return args


def fail(msg: str, code: int = 2) -> int:
    """Print ``error: msg`` on stderr and return the exit code."""
    print(f"error: {msg}", file=sys.stderr)
    return code


def help_or_args(argv: list[str], help_text: str, parse: Callable[[list[str]], Any]) -> Any:
    """The exit code after printing help (``-h``/``--help``/``help``) or a bad argument, else ``parse(argv)``."""
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text)
        return 0
    args = parse(argv)
    return fail(args) if isinstance(args, str) else args
