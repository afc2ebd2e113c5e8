"""List shaping for the vendor's list endpoints: orderBy, fields, page/pageSize, Link headers,
and forward-only paging (pageId)."""
from __future__ import annotations

import math
from urllib.parse import quote, urlencode

from .conditions import ConditionError, get_path, resolve_field


class PagingError(ValueError):
    """Bad paging/orderBy parameter; the app answers 400 naming `field`."""

    def __init__(self, message, field="page"):
        super().__init__(message)
        self.field = field


def _int_arg(args, name, default):
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise PagingError(f"{name} must be an integer, got {raw!r}", name) from None


def parse_paging(args, headers, config):
    """-> dict(page, page_size, forward_only, page_id).

    pageSize above the maximum is clamped by default (the vendor documents a hard limit of 1000
    records); config page_size_over_max="error" answers 400 instead."""
    size = _int_arg(args, "pageSize", config["default_page_size"])
    if size < 1:
        size = config["default_page_size"]
    if size > config["max_page_size"]:
        if config["page_size_over_max"] == "error":
            raise PagingError(f"pageSize must be at most {config['max_page_size']}", "pageSize")
        size = config["max_page_size"]
    page = max(1, _int_arg(args, "page", 1))
    forward = (headers.get("pagination-type") or "").strip().lower() == "forward-only"
    page_id = _int_arg(args, "pageId", 0) if forward else None
    return {"page": page, "page_size": size, "forward_only": forward, "page_id": page_id}


def parse_order(text, schema, aliases=None):
    """'name asc, id desc' -> [(path, descending)]; default is id ascending."""
    if not text or not text.strip():
        return [(("id",), False)]
    order = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2:
            raise PagingError(f"Invalid orderBy clause {part.strip()!r}", "orderBy")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise PagingError(f"orderBy direction must be asc or desc, got {words[1]!r}", "orderBy")
        try:
            path, ftype = resolve_field(schema, words[0], aliases)
        except ConditionError as exc:
            raise PagingError(f"Invalid orderBy field: {exc}", "orderBy") from None
        if isinstance(ftype, dict):
            raise PagingError(f"Cannot order by reference {words[0]!r}; use {words[0]}/name",
                              "orderBy")
        order.append((path, direction == "desc"))
    return order


def sort_records(records, order):
    """Stable multi-key sort; nulls first ascending (SQL Server order), text case-insensitive."""
    out = list(records)
    for path, desc in reversed(order):
        def key(rec, path=path):
            v = get_path(rec, path)
            if v is None:
                return (0, 0)
            return (1, v.casefold() if isinstance(v, str) else v)
        out.sort(key=key, reverse=desc)
    return out


def project(rec, fields_text, schema):
    """fields=id,name,company/name -> only those members (nested paths kept nested).
    Unknown fields are skipped, as the vendor does."""
    if not fields_text or not fields_text.strip():
        return rec
    out = {}
    for raw in fields_text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        try:
            path, _ = resolve_field(schema, raw)
        except ConditionError:
            continue
        src, dst = rec, out
        for i, key in enumerate(path):
            if not isinstance(src, dict) or key not in src:
                break
            if i == len(path) - 1 or src[key] is None or not isinstance(src[key], dict):
                dst[key] = src[key]
                break
            dst = dst.setdefault(key, {})
            src = src[key]
    return out


def _url(base_url, args, **override):
    items = [(k, v) for k, v in args.items(multi=True) if k not in override]
    items += [(k, str(v)) for k, v in override.items()]
    return f"{base_url}?{urlencode(items, quote_via=quote)}"


def navigable(records, paging, base_url, args):
    """-> (page of records, Link header or None). RFC 5988 links with absolute URLs:
    first/prev when not on page 1, next/last when not on the last page."""
    total = len(records)
    size, page = paging["page_size"], paging["page"]
    last = max(1, math.ceil(total / size))
    items = records[(page - 1) * size: page * size]
    links = []
    if page > 1:
        links.append((_url(base_url, args, page=1), "first"))
        links.append((_url(base_url, args, page=min(page - 1, last)), "prev"))
    if page < last:
        links.append((_url(base_url, args, page=page + 1), "next"))
        links.append((_url(base_url, args, page=last), "last"))
    header = ", ".join(f'<{u}>; rel="{rel}"' for u, rel in links) or None
    return items, header


def forward_only(records, paging, base_url, args):
    """records sorted by id. pageId works like an extra 'id > pageId' condition; the next link
    carries the last id of this page and is left out when nothing follows."""
    size, after = paging["page_size"], paging["page_id"] or 0
    rest = [r for r in records if r["id"] > after]
    items = rest[:size]
    header = None
    if len(rest) > size:
        header = f'<{_url(base_url, args, pageId=items[-1]["id"])}>; rel="next"'
    return items, header
