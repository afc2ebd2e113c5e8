"""Page parameters and the list envelope every list endpoint and RPC returns."""
from common.errors import BadRequest

MAX_PER_PAGE = 200


def page_params(page=1, per_page=50):
    try:
        page, per_page = int(page), int(per_page)
    except (TypeError, ValueError):
        raise BadRequest("page and per_page must be integers") from None
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise BadRequest(f"page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}")
    return page, per_page


def envelope(items, total, page, per_page):
    return {"items": items, "total": total, "page": page, "per_page": per_page,
            "pages": (total + per_page - 1) // per_page if per_page else 0}


def paginate(session, query, page, per_page, row_to_dict=lambda r: dict(r._mapping)):
    """Run a SQLAlchemy select with a count, newest-first ordering being the caller's choice."""
    from sqlalchemy import func, select

    total = session.execute(select(func.count()).select_from(query.order_by(None).subquery())).scalar_one()
    rows = session.execute(query.limit(per_page).offset((page - 1) * per_page)).all()
    return envelope([row_to_dict(r) for r in rows], total, page, per_page)
