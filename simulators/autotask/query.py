"""Autotask query filters: parse, validate and compile to a Python predicate.

Filter grammar (vendor docs, "Making basic query calls"): a list of expressions
ANDed together; an expression is {"op","field","value"} or a group
{"op":"and"|"or","items":[...]}. Field names are case-insensitive. String
comparisons are case-insensitive, like the vendor's SQL collation, and a null
field fails every comparison except notExist (SQL semantics).
"""
from __future__ import annotations

from typing import Any, Callable

from .units import DateError, parse_wire

COMPARE_OPS = {"eq", "noteq", "gt", "gte", "lt", "lte", "beginswith", "endswith", "contains",
               "exist", "notexist", "in", "notin"}
GROUP_OPS = {"and", "or"}
# fields whose eq/in filters can use a table index instead of a scan
INDEX_OPS = {"eq", "in"}


class QueryError(ValueError):
    """A filter the vendor would refuse; the message goes into {"errors": [...]}."""


def coerce(value: Any, ftype: str, field: str) -> Any:
    if value is None:
        return None
    try:
        if ftype == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if ftype == "decimal":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if ftype == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ValueError
        if ftype in ("date", "datetime"):
            return parse_wire(value, ftype == "date")
        if isinstance(value, (dict, list)):
            raise ValueError
        return str(value)
    except (ValueError, TypeError, DateError):
        raise QueryError(f"Value '{value}' is not valid for field {field}.") from None


def _norm(value: Any) -> Any:
    # case-insensitive comparisons for strings only
    return value.lower() if isinstance(value, str) else value


class Compiled:
    """A compiled filter: predicate plus hints for index use."""

    def __init__(self, predicate: Callable[[dict], bool], hints: dict[str, set], ranges: dict[str, list]):
        self.predicate = predicate
        self.hints = hints      # canonical field -> allowed values (top-level eq/in only)
        self.ranges = ranges    # canonical field -> [(op, wire value)] (top-level comparisons)


def compile_filter(filters: Any, fields: dict[str, str]) -> Compiled:
    """fields: canonical name -> type. Raises QueryError on anything invalid."""
    if not isinstance(filters, list) or not filters:
        raise QueryError("A query requires at least one filter expression.")
    lower = {name.lower(): name for name in fields}
    hints: dict[str, set] = {}
    ranges: dict[str, list] = {}
    preds = []
    for expr in filters:
        preds.append(_compile(expr, fields, lower))
        _collect_hints(expr, lower, fields, hints, ranges)
    return Compiled(_all(preds), hints, ranges)


def _all(preds):
    if len(preds) == 1:
        return preds[0]
    return lambda row: all(p(row) for p in preds)


def _field(expr: dict, lower: dict) -> str:
    name = expr.get("field")
    if not isinstance(name, str) or not name:
        raise QueryError("A filter expression requires a field.")
    if expr.get("udf"):
        raise QueryError(f"Unable to find the user-defined field {name}.")
    canon = lower.get(name.lower())
    if canon is None:
        raise QueryError(f"Unable to find {name} in the entity's fields.")
    return canon


def _keyed(expr: dict) -> dict:
    return {str(k).lower(): v for k, v in expr.items()} if isinstance(expr, dict) else {}


def _compile(raw: Any, fields: dict, lower: dict) -> Callable[[dict], bool]:
    if not isinstance(raw, dict):
        raise QueryError("Each filter expression must be an object.")
    expr = _keyed(raw)
    op = str(expr.get("op", "")).lower()
    if op in GROUP_OPS:
        items = expr.get("items")
        if not isinstance(items, list) or not items:
            raise QueryError(f"The '{op}' grouping requires a non-empty items array.")
        subs = [_compile(item, fields, lower) for item in items]
        if op == "and":
            return _all(subs)
        return lambda row: any(p(row) for p in subs)
    if op not in COMPARE_OPS:
        raise QueryError(f"'{expr.get('op')}' is not a valid filter operator.")
    name = _field(expr, lower)
    ftype = fields[name]

    if op == "exist":
        return lambda row: row.get(name) not in (None, "")
    if op == "notexist":
        return lambda row: row.get(name) in (None, "")

    value = expr.get("value")
    if op in ("in", "notin"):
        if not isinstance(value, list):
            raise QueryError(f"The '{expr.get('op')}' operator requires an array value.")
        wanted = {_norm(coerce(v, ftype, name)) for v in value}
        if op == "in":
            return lambda row: row.get(name) is not None and _norm(row.get(name)) in wanted
        return lambda row: row.get(name) is not None and _norm(row.get(name)) not in wanted

    if op in ("beginswith", "endswith", "contains"):
        if value is None:
            raise QueryError(f"The '{expr.get('op')}' operator requires a value.")
        needle = str(value).lower()
        if op == "beginswith":
            return lambda row: row.get(name) is not None and str(row.get(name)).lower().startswith(needle)
        if op == "endswith":
            return lambda row: row.get(name) is not None and str(row.get(name)).lower().endswith(needle)
        return lambda row: row.get(name) is not None and needle in str(row.get(name)).lower()

    target = _norm(coerce(value, ftype, name))
    if target is None:
        # eq null / noteq null: treat like notExist / exist
        if op == "eq":
            return lambda row: row.get(name) is None
        if op == "noteq":
            return lambda row: row.get(name) is not None
        raise QueryError(f"The '{expr.get('op')}' operator requires a value.")
    if ftype == "bool" and op not in ("eq", "noteq"):
        raise QueryError(f"The '{expr.get('op')}' operator is not valid for boolean field {name}.")
    cmp = {
        "eq": lambda a: a == target,
        "noteq": lambda a: a != target,
        "gt": lambda a: a > target,
        "gte": lambda a: a >= target,
        "lt": lambda a: a < target,
        "lte": lambda a: a <= target,
    }[op]

    def pred(row: dict) -> bool:
        v = row.get(name)
        return v is not None and cmp(_norm(v))
    return pred


def _collect_hints(raw: Any, lower: dict, fields: dict, hints: dict, ranges: dict) -> None:
    """Top-level eq/in on a field narrows the candidates; comparisons narrow periods."""
    expr = _keyed(raw)
    op = str(expr.get("op", "")).lower()
    if op == "and":
        for item in expr.get("items") or []:
            _collect_hints(item, lower, fields, hints, ranges)
        return
    name = lower.get(str(expr.get("field", "")).lower())
    if name is None or expr.get("udf"):
        return
    ftype = fields[name]
    if op in INDEX_OPS and ftype == "int":
        values = expr.get("value") if op == "in" else [expr.get("value")]
        try:
            allowed = {coerce(v, ftype, name) for v in values}
        except QueryError:
            return
        hints[name] = hints[name] & allowed if name in hints else allowed
    elif op in ("eq", "gt", "gte", "lt", "lte") and ftype in ("date", "datetime"):
        try:
            ranges.setdefault(name, []).append((op, coerce(expr.get("value"), ftype, name)))
        except QueryError:
            return


def project(row: dict, include: list[str] | None, extra: dict | None = None) -> dict:
    """IncludeFields: id always, then the requested fields in entity order."""
    if include is None:
        out = dict(row)
    else:
        out = {k: v for k, v in row.items() if k == "id" or k in include}
    if extra:
        out.update(extra)
    return out


def resolve_include(include: Any, fields: dict) -> list[str] | None:
    if include in (None, []):
        return None
    if not isinstance(include, list):
        raise QueryError("IncludeFields must be an array of field names.")
    lower = {name.lower(): name for name in fields}
    out = []
    for name in include:
        canon = lower.get(str(name).lower())
        if canon is None:
            raise QueryError(f"Unable to find {name} in the entity's fields.")
        out.append(canon)
    return out
