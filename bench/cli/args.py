"""Argument parsing of the verbs that take plain ``key=value`` arguments (aggregate, latency)."""

from __future__ import annotations


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
