"""The errors the mapping rules raise. All are ValueErrors: bad or missing input, never a crash."""


class MappingDomainError(ValueError):
    """Base of every error raised by the mapping rules."""


class PriceError(MappingDomainError):
    """A unit price can not be computed."""


class UnknownPriceRule(PriceError):
    """The rule is not one of psa_catalog | msrp | cost_plus | fixed."""


class MissingPriceInput(PriceError):
    """The rule needs an input that is unknown (e.g. psa_catalog without a PSA price)."""

    def __init__(self, rule, field, detail=""):
        self.rule, self.field = rule, field
        super().__init__(f"price rule {rule!r} needs {field}, which is unknown" + (f": {detail}" if detail else ""))


class InvalidAmount(PriceError):
    """A money or percentage input is not a finite number, or is out of range."""
