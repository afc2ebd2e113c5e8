"""Posting mode: does a planned change post at once or wait in the approval queue?"""
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from .dates import NEW_LINE, NO_CHANGE
from .errors import MappingDomainError
from .money import to_decimal

AUTO, REVIEW, THRESHOLD = "auto", "review", "threshold"
POSTING_MODES = (AUTO, REVIEW, THRESHOLD)
EDITED_IN_PSA = ("overwrite", "hold")


@dataclass(frozen=True)
class BillingSettings:
    """A tenant's billing settings (table billing_settings). ``threshold_percent`` is a
    percentage (Decimal('20') = 20 %); a threshold left None is not applied."""

    posting_mode: str = AUTO
    threshold_units: int | None = None
    threshold_percent: Decimal | None = None
    bill_suspended: bool = False
    credit_decreases_immediately: bool = False
    edited_in_psa: str = "hold"

    def __post_init__(self):
        if self.posting_mode not in POSTING_MODES:
            raise MappingDomainError(f"unknown posting mode {self.posting_mode!r}")
        if self.edited_in_psa not in EDITED_IN_PSA:
            raise MappingDomainError(f"unknown edited_in_psa setting {self.edited_in_psa!r}")
        if self.threshold_units is not None and (not isinstance(self.threshold_units, int) or self.threshold_units < 0):
            raise MappingDomainError(f"threshold_units must be a whole number >= 0, not {self.threshold_units!r}")
        pct = to_decimal(self.threshold_percent, "threshold_percent")
        if pct is not None and pct < 0:
            raise MappingDomainError(f"threshold_percent must be >= 0, not {pct}")
        object.__setattr__(self, "threshold_percent", pct)

    def decide(self, change):
        return posting_decision(change, mode=self.posting_mode, threshold_units=self.threshold_units,
                                threshold_percent=self.threshold_percent)


class PostingDecision(NamedTuple):
    needs_approval: bool
    reasons: list


def _fmt_pct(value):
    return f"{value.quantize(Decimal('0.1')).normalize():f}%"


def posting_decision(change, *, mode, threshold_units=None, threshold_percent=None):
    """(needs_approval, reasons) for one PlannedChange.

    - no_change: nothing to post, never needs approval.
    - auto: never; review: always.
    - threshold: needs approval when |delta units| > threshold_units, or |delta| / previous
      quantity > threshold_percent %, or the unit price moved. Boundaries are inclusive for
      auto-posting: a change of exactly the threshold posts at once.
      A new line (or a change from 0 units) has no previous quantity, so only the units test
      applies to it; its first price is not a "moved" price. A move of unit cost alone does
      not change the invoice and does not need approval.
    """
    if mode not in POSTING_MODES:
        raise MappingDomainError(f"unknown posting mode {mode!r}")
    if change.kind == NO_CHANGE or mode == AUTO:
        return PostingDecision(False, [])
    if mode == REVIEW:
        return PostingDecision(True, ["posting mode is review: every change waits for approval"])
    reasons = []
    delta = abs(change.delta_units)
    if threshold_units is not None and delta > threshold_units:
        reasons.append(f"change of {delta} units exceeds the threshold of {threshold_units} units")
    pct_limit = to_decimal(threshold_percent, "threshold_percent")
    if pct_limit is not None and change.kind != NEW_LINE and change.quantity_before > 0:
        if delta * 100 > pct_limit * change.quantity_before:
            pct = Decimal(delta * 100) / change.quantity_before
            reasons.append(f"change of {_fmt_pct(pct)} exceeds the threshold of {_fmt_pct(pct_limit)}")
    if change.price_changed:
        reasons.append(f"unit price moves from {change.unit_price_before} to {change.unit_price_after}")
    return PostingDecision(bool(reasons), reasons)
