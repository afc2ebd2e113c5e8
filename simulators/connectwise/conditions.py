"""ConnectWise `conditions` language: tokenizer, parser, type check, evaluator.

Grammar (keywords case-insensitive):
    expr    := term ( ("and" | "or") term )*        -- "and" binds tighter than "or"
    term    := "(" expr ")" | field op value
    op      := = != < <= > >= | like | not like | contains | not contains | in | not in
    value   := "string" | number | [date] | True | False | null | "(" value ("," value)* ")"
    field   := name ( "/" name )*                    -- references: company/id, product/identifier

Semantics follow the vendor's SQL back end: string comparisons are case-insensitive, and a
comparison against a null field is false for every operator except `= null` (so `x != "a"`
does not match rows where x is null).

Fields are checked against an entity schema (see state.SCHEMAS) so that unknown fields and
type mismatches fail with 400 at parse time instead of silently matching nothing.
"""
from __future__ import annotations

import operator as _o
import re
from datetime import datetime, timezone


class ConditionError(ValueError):
    """Bad syntax or a field/type error; the app turns it into a 400."""


# --- dates -------------------------------------------------------------------------------

DATE_FMT = "%Y-%m-%dT%H:%M:%SZ"


def normalize_date(text):
    """Any ISO-8601 date/datetime -> 'YYYY-MM-DDTHH:MM:SSZ' (UTC). Normalized strings sort
    chronologically, so comparisons never need to re-parse stored values."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("date must be a string")
    s = text.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime(DATE_FMT)


# --- tokenizer -----------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<date>\[[^\]]*\])
  | (?P<number>-?\d+(?:\.\d+)?(?![A-Za-z_]))
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE,
)

_KEYWORDS = {"and", "or", "not", "like", "in", "contains", "true", "false", "null"}


def tokenize(text):
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            if text[pos] == '"':
                raise ConditionError(f"Unterminated string starting at position {pos}")
            if text[pos] == "[":
                raise ConditionError(f"Unterminated date starting at position {pos}")
            raise ConditionError(f"Unexpected character {text[pos]!r} at position {pos}")
        kind = m.lastgroup
        val = m.group()
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "name" and val.lower() in _KEYWORDS:
            kind, val = "kw", val.lower()
        tokens.append((kind, val, m.start()))
    tokens.append(("eof", "", len(text)))
    return tokens


# --- parser (recursive descent) -----------------------------------------------------------

class _Parser:
    def __init__(self, text):
        self.toks = tokenize(text)
        self.i = 0

    def peek(self):
        return self.toks[self.i]

    def take(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, kind, val=None):
        tok = self.take()
        if tok[0] != kind or (val is not None and tok[1] != val):
            want = val or kind
            raise ConditionError(f"Expected {want} at position {tok[2]} but found {tok[1]!r}")
        return tok

    def parse(self):
        node = self.or_expr()
        tok = self.peek()
        if tok[0] != "eof":
            raise ConditionError(f"Unexpected {tok[1]!r} at position {tok[2]}")
        return node

    def or_expr(self):
        parts = [self.and_expr()]
        while self.peek()[:2] == ("kw", "or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def and_expr(self):
        parts = [self.term()]
        while self.peek()[:2] == ("kw", "and"):
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def term(self):
        tok = self.peek()
        if tok[0] == "lparen":
            self.take()
            node = self.or_expr()
            self.expect("rparen")
            return node
        if tok[0] != "name":
            raise ConditionError(f"Expected a field name at position {tok[2]} but found {tok[1]!r}")
        field = self.take()[1]
        op = self.operator()
        if op in ("in", "not in"):
            value = self.value_list()
        else:
            value = self.value()
        return ("cmp", field, op, value)

    def operator(self):
        tok = self.take()
        if tok[0] == "op":
            return "!=" if tok[1] == "<>" else tok[1]
        if tok[0] == "kw" and tok[1] in ("like", "contains", "in"):
            return tok[1]
        if tok[0] == "kw" and tok[1] == "not":
            nxt = self.take()
            if nxt[0] == "kw" and nxt[1] in ("like", "contains", "in"):
                return "not " + nxt[1]
            raise ConditionError(f"Expected like, contains or in after 'not' at position {nxt[2]}")
        raise ConditionError(f"Expected an operator at position {tok[2]} but found {tok[1]!r}")

    def value(self):
        kind, val, pos = self.take()
        if kind == "string":
            return ("str", re.sub(r"\\(.)", r"\1", val[1:-1]))
        if kind == "number":
            return ("num", float(val) if "." in val else int(val))
        if kind == "date":
            try:
                return ("date", normalize_date(val[1:-1]))
            except ValueError:
                raise ConditionError(f"Invalid date {val} at position {pos}") from None
        if kind == "kw" and val in ("true", "false"):
            return ("bool", val == "true")
        if kind == "kw" and val == "null":
            return ("null", None)
        raise ConditionError(f"Expected a value at position {pos} but found {val!r}")

    def value_list(self):
        self.expect("lparen")
        items = [self.value()]
        while self.peek()[0] == "comma":
            self.take()
            items.append(self.value())
        self.expect("rparen")
        return ("list", items)


def parse(text):
    """Text -> AST (tuples). Raises ConditionError."""
    return _Parser(text).parse()


# --- schema resolution ---------------------------------------------------------------------

def resolve_field(schema, dotted, aliases=None):
    """'Company/ID' -> (('company', 'id'), 'int'). Field names are case-insensitive in
    conditions (as in the vendor's SQL back end); the returned path uses the schema's spelling."""
    if aliases and dotted.lower() in aliases:
        dotted = aliases[dotted.lower()]
    node = schema
    path = []
    for part in dotted.split("/"):
        if not isinstance(node, dict):
            raise ConditionError(f"Field {dotted!r} is not a reference; '/{part}' is not valid")
        match = next((k for k in node if k.lower() == part.lower()), None)
        if match is None:
            raise ConditionError(f"Unknown field {dotted!r}")
        path.append(match)
        node = node[match]
    return tuple(path), node


def get_path(rec, path):
    for key in path:
        if rec is None:
            return None
        rec = rec.get(key)
    return rec


# --- compile to a predicate ----------------------------------------------------------------

def _coerce(ftype, lit, field):
    """Literal -> comparable python value for a field of type ftype (or ConditionError)."""
    kind, val = lit
    if kind == "null":
        return None
    if ftype in ("int", "float"):
        if kind == "num":
            return val
        if kind == "str":
            try:
                return float(val) if ftype == "float" or "." in val else int(val)
            except ValueError:
                pass
        raise ConditionError(f"Field {field!r} is numeric; {val!r} is not a number")
    if ftype == "bool":
        if kind == "bool":
            return val
        raise ConditionError(f"Field {field!r} is a boolean; use True or False")
    if ftype == "date":
        if kind in ("date", "str"):
            try:
                return normalize_date(val)
            except ValueError:
                pass
        raise ConditionError(f"Field {field!r} is a date; use [yyyy-mm-ddThh:mm:ssZ]")
    # strings (and enums stored as strings)
    if kind == "str":
        return val.casefold()
    if kind == "num":  # the vendor converts numbers compared with text columns
        return str(val).casefold()
    raise ConditionError(f"Field {field!r} is text; quote the value")


def _like_regex(pattern):
    # '*' is the documented wildcard; '%' is accepted too since the back end is SQL LIKE.
    parts = re.split(r"([*%])", pattern)
    body = "".join(".*" if p in ("*", "%") else re.escape(p) for p in parts)
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL)


def _cmp_pred(schema, node, aliases):
    _, field, op, lit = node
    path, ftype = resolve_field(schema, field, aliases)
    if isinstance(ftype, dict):
        raise ConditionError(f"Field {field!r} is a reference; compare one of its members, e.g. {field}/id")
    is_text = ftype == "str"

    def norm(v):
        # Stored text is compared case-insensitively; other types compare as stored.
        if v is None:
            return None
        return v.casefold() if is_text and isinstance(v, str) else v

    if op in ("in", "not in"):
        values = {_coerce(ftype, item, field) for item in lit[1]}
        values.discard(None)
        want = op == "in"

        def pred(rec):
            v = norm(get_path(rec, path))
            return v is not None and ((v in values) == want)
        return pred

    if op in ("like", "not like", "contains", "not contains"):
        if ftype not in ("str", "date"):
            raise ConditionError(f"Operator {op!r} needs a text field; {field!r} is {ftype}")
        if lit[0] != "str":
            raise ConditionError(f"Operator {op!r} needs a quoted string")
        if op.endswith("like"):
            rx = _like_regex(lit[1])
        else:
            rx = re.compile(re.escape(lit[1]), re.IGNORECASE)
        want = not op.startswith("not")
        match = rx.match if op.endswith("like") else rx.search

        def pred(rec):
            v = get_path(rec, path)
            return v is not None and (match(str(v)) is not None) == want
        return pred

    target = _coerce(ftype, lit, field)
    if target is None:
        if op == "=":
            return lambda rec: get_path(rec, path) is None
        if op == "!=":
            return lambda rec: get_path(rec, path) is not None
        raise ConditionError(f"Operator {op!r} cannot compare with null")
    if ftype == "bool" and op not in ("=", "!="):
        raise ConditionError(f"Operator {op!r} is not valid for boolean field {field!r}")

    fn = {"=": _o.eq, "!=": _o.ne, "<": _o.lt, "<=": _o.le, ">": _o.gt, ">=": _o.ge}[op]

    def pred(rec):
        v = norm(get_path(rec, path))
        if v is None:
            return False
        try:
            return fn(v, target)
        except TypeError:
            return False
    return pred


def _build(schema, node, aliases):
    kind = node[0]
    if kind == "cmp":
        return _cmp_pred(schema, node, aliases)
    preds = [_build(schema, child, aliases) for child in node[1]]
    if kind == "and":
        return lambda rec: all(p(rec) for p in preds)
    return lambda rec: any(p(rec) for p in preds)


def compile_conditions(text, schema, aliases=None):
    """conditions text -> (predicate, ast). Empty/None text matches everything."""
    if text is None or not text.strip():
        return (lambda rec: True), None
    ast = parse(text)
    return _build(schema, ast, aliases), ast


def required_values(ast, schema, field, aliases=None):
    """If the AST can only match records whose `field` is in a fixed set (an `=`/`in`
    on that field at the top level or inside a top-level `and`), return that set, else None.
    Lets the store use an index (e.g. additions by agreementId) instead of scanning."""
    if ast is None:
        return None
    conjuncts = ast[1] if ast[0] == "and" else [ast]
    want_path, ftype = resolve_field(schema, field)
    result = None
    for node in conjuncts:
        if node[0] != "cmp" or node[2] not in ("=", "in"):
            continue
        try:
            path, _ = resolve_field(schema, node[1], aliases)
        except ConditionError:
            continue
        if path != want_path:
            continue
        lits = node[3][1] if node[2] == "in" else [node[3]]
        vals = {_coerce(ftype, lit, field) for lit in lits}
        result = vals if result is None else result & vals
    return result
