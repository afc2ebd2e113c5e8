"""Decimal helpers. Money is Decimal; rounding to cents (half-up) happens once, at the end."""
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from .errors import InvalidAmount

CENT = Decimal("0.01")
ZERO = Decimal("0")


def to_decimal(value, field="amount"):
    """None stays None; int/str/Decimal become Decimal; a float goes through its shortest repr
    (10.005 -> Decimal('10.005'), not the binary 10.00499999...). Anything else, NaN or
    infinity raises InvalidAmount."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidAmount(f"{field} must be a number, not {value!r}")
    if isinstance(value, float):
        value = repr(value)
    try:
        result = value if isinstance(value, Decimal) else Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidAmount(f"{field} is not a number: {value!r}") from None
    if not result.is_finite():
        raise InvalidAmount(f"{field} must be finite, not {value!r}")
    return result


def round_money(value):
    """Half-up to cents: Decimal('11.505') -> 11.51, Decimal('-0.005') -> -0.01."""
    return to_decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def same_money(a, b):
    """True when two amounts are the same number of cents (12.35 == 12.3500); None only equals None."""
    if a is None or b is None:
        return a is None and b is None
    return round_money(a) == round_money(b)
