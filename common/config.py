"""Service configuration: YAML with ${ENV:default} substitution anywhere in a string value.

nameko's own loader only substitutes whole values in some versions; ours substitutes inside
strings too, so a DB URI can carry a password from the environment.
"""
import os
import re

import yaml

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


_SCALAR = re.compile(r"-?\d+(\.\d+)?|true|false", re.IGNORECASE)


def _typed(raw):
    """Numbers, booleans and [lists] keep their YAML type; anything else (keys, passwords) stays text."""
    if raw.startswith(("[", "{")) or _SCALAR.fullmatch(raw):
        return yaml.safe_load(raw)
    return raw


def substitute(value):
    if isinstance(value, str):
        whole = _ENV.fullmatch(value)
        if whole:  # a whole-value reference keeps YAML typing of the substituted text (ints, lists)
            raw = os.environ.get(whole.group(1), whole.group(2) if whole.group(2) is not None else "")
            return _typed(raw)
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: substitute(v) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v) for v in value]
    return value


def load_config(path):
    with open(path) as fh:
        return substitute(yaml.safe_load(fh) or {})
