"""Mapping suggestions and reference checks.

Suggestion order: an exact match (names equal after normalisation, or a shared e-mail/web
domain) scores 100; otherwise the best rapidfuzz token_sort_ratio on normalised names at or
above the cutoff (85) with its score. Ties and no candidate leave the item unmapped.

Speed: names are normalised and token-sorted once per matcher; token_sort_ratio then is
fuzz.ratio on those strings (the plain ratio of the unsorted names is also tried, see NameIndex). Candidates are sorted by length and each query only scores the
length window that could reach the cutoff (ratio <= 200 x shorter / (sum of lengths)), so
10,000 x 10,000 runs in seconds.
"""
import bisect
import math
import re
import unicodedata
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from .lines import CONFLICT, IGNORED, MAPPED, SUGGESTED, UNMAPPED

FUZZY_CUTOFF = 85
LEGAL_SUFFIXES = frozenset("""
    inc incorporated llc llp lp ltd limited plc corp corporation co company gmbh mbh ag kg ohg ug
    sa sas sarl srl spa bv nv ab as asa aps oy oyj pty pte pvt kft sro sp zoo zo
""".split())
FREE_MAIL_DOMAINS = frozenset("""
    gmail.com googlemail.com outlook.com hotmail.com hotmail.co.uk live.com msn.com yahoo.com
    yahoo.co.uk icloud.com me.com mac.com aol.com gmx.com gmx.de gmx.net web.de t-online.de
    proton.me protonmail.com mail.com yandex.com yandex.ru zoho.com
""".split())
_JOINERS = re.compile(r"[.'\u2019`]")
_SEPARATORS = re.compile(r"[^0-9a-z]+")


def _fold(text):
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c)).lower().replace("&", " and ")
    return _SEPARATORS.sub(" ", _JOINERS.sub("", text)).split()


def normalise_name(name):
    """Case, spacing, accents and punctuation folded ('&' reads 'and'; dots and apostrophes
    join: 'L.L.C.' -> 'llc', "O'Neil" -> 'oneil'); legal suffixes dropped from the end:
    'ACME, Inc.' -> 'acme', 'Müller GmbH & Co. KG' -> 'muller'. A name made only of suffixes
    keeps its first token ('Inc.' -> 'inc')."""
    tokens = _fold(name)
    while len(tokens) > 1 and tokens[-1] in LEGAL_SUFFIXES:
        tokens.pop()
    while len(tokens) > 1 and tokens[-1] == "and" and tokens[-2] in LEGAL_SUFFIXES:
        tokens.pop()  # "GmbH & Co" -> "gmbh and" -> drop the dangling "and", then its suffix
        while len(tokens) > 1 and tokens[-1] in LEGAL_SUFFIXES:
            tokens.pop()
    return " ".join(tokens)


def normalise_product_name(name):
    """Product names: case, spacing, accents and punctuation folded; nothing dropped."""
    return " ".join(_fold(name))


def normalise_domain(value):
    """'https://www.Acme.com/about' / 'bob@acme.com' / 'ACME.COM.' -> 'acme.com'; '' for nothing."""
    value = (value or "").strip().lower()
    if "@" in value and "//" not in value:
        value = value.rsplit("@", 1)[1]
    value = re.sub(r"^[a-z][a-z0-9+.-]*://", "", value)
    value = re.split(r"[/?#:]", value, maxsplit=1)[0].strip(".")
    if value.startswith("www."):
        value = value[4:]
    return value if "." in value else ""


def _token_sorted(key):
    return " ".join(sorted(key.split()))


@dataclass(frozen=True)
class Suggestion:
    """status ``suggested`` (with psa_id, score, method) or ``unmapped`` (with the reason)."""

    status: str
    psa_id: str | None = None
    score: float | None = None
    method: str | None = None   # exact_name | domain | identifier | fuzzy_name | only_contract
    reason: str = ""


def _unmapped(reason):
    return Suggestion(UNMAPPED, reason=reason)


class NameIndex:
    """Candidates (psa_id, normalised name) prepared once for exact and fuzzy lookups.

    The fuzzy score of a candidate is the better of token_sort_ratio (word order does not
    matter) and the plain ratio of the normalised names (a typo in a word's first letter
    reorders the sorted words and would sink token_sort_ratio alone)."""

    def __init__(self, pairs, cutoff=FUZZY_CUTOFF):
        self.cutoff = cutoff
        self.exact = {}
        for psa_id, key in pairs:
            if key:
                self.exact.setdefault(key, []).append(psa_id)
        plain = sorted(self.exact, key=len)
        self.plain_keys = plain
        self.sorted_keys = [_token_sorted(k) for k in plain]   # same length as the plain key
        self.ids = [self.exact[k] for k in plain]
        self.lengths = [len(k) for k in plain]
        self._windows = {}

    def _window(self, length):
        """Candidates whose length can reach the cutoff: ratio <= 200 x shorter / (sum of lengths)."""
        if length not in self._windows:
            ratio = self.cutoff / (200 - self.cutoff) if 0 < self.cutoff < 100 else (1 if self.cutoff >= 100 else 0)
            lo = bisect.bisect_left(self.lengths, math.floor(length * ratio) - 1)
            hi = bisect.bisect_right(self.lengths, math.ceil(length / ratio) + 1) if ratio else len(self.lengths)
            self._windows[length] = (lo, self.sorted_keys[lo:hi], self.plain_keys[lo:hi])
        return self._windows[length]

    def fuzzy(self, key):
        """(psa_ids, score) of the best fuzzy match at or above the cutoff; a tie gives the ids of
        every tied candidate; ([], None) for none."""
        if not key:
            return [], None
        lo, sorted_choices, plain_choices = self._window(len(key))
        best = {}
        for query, choices in ((_token_sorted(key), sorted_choices), (key, plain_choices)):
            for _, score, index in process.extract(query, choices, scorer=fuzz.ratio, processor=None,
                                                   score_cutoff=self.cutoff, limit=2):
                best[lo + index] = max(best.get(lo + index, 0), score)
        if not best:
            return [], None
        top = max(best.values())
        ids = [psa_id for index, score in best.items() if score == top for psa_id in self.ids[index]]
        return ids, round(top, 1)


def _decide(exact_ids, domain_ids, index, key, what):
    """The shared suggestion logic: exact name, then domain (score 100), then fuzzy. ``what``
    names the candidates in reasons ("PSA company")."""
    exact_ids, domain_ids = sorted(set(exact_ids)), sorted(set(domain_ids))
    if len(exact_ids) > 1:
        return _unmapped(f"{len(exact_ids)} {what} candidates have this exact name: {', '.join(exact_ids)}")
    if len(domain_ids) > 1 and not exact_ids:
        return _unmapped(f"{len(domain_ids)} {what} candidates share this domain: {', '.join(domain_ids)}")
    if exact_ids and domain_ids and domain_ids != exact_ids:
        return _unmapped(f"the exact name points to {exact_ids[0]}, the domain to {', '.join(domain_ids)}")
    if exact_ids:
        return Suggestion(SUGGESTED, exact_ids[0], 100.0, "exact_name")
    if domain_ids:
        return Suggestion(SUGGESTED, domain_ids[0], 100.0, "domain")
    ids, score = index.fuzzy(key)
    if not ids:
        return _unmapped(f"no {what} candidate scores {index.cutoff} or more")
    if len(set(ids)) > 1:
        return _unmapped(f"tie at score {score} between {', '.join(sorted(set(ids)))}")
    return Suggestion(SUGGESTED, ids[0], score, "fuzzy_name")


class CompanyMatcher:
    """Suggests a PSA company for a marketplace customer. Only active companies are candidates."""

    def __init__(self, companies, cutoff=FUZZY_CUTOFF):
        active = [c for c in companies if c.active]
        self.index = NameIndex(((c.psa_id, normalise_name(c.name)) for c in active), cutoff)
        self.by_domain = {}
        for c in active:
            for d in {normalise_domain(x) for x in c.domains} - {""} - FREE_MAIL_DOMAINS:
                self.by_domain.setdefault(d, []).append(c.psa_id)

    def suggest(self, name, domains=()):
        """``domains``: the customer's web/e-mail domains in any form. Free-mail domains
        (gmail.com, outlook.com, ...) never match."""
        if isinstance(domains, str):
            domains = (domains,)
        key = normalise_name(name)
        wanted = {normalise_domain(d) for d in domains or ()} - {""} - FREE_MAIL_DOMAINS
        domain_ids = [i for d in sorted(wanted) for i in self.by_domain.get(d, [])]
        return _decide(self.index.exact.get(key, []), domain_ids, self.index, key, "PSA company")

    def suggest_all(self, customers):
        """{customer_id: Suggestion} for (customer_id, name, domains) triples."""
        return {cid: self.suggest(name, domains) for cid, name, domains in customers}


class ServiceMatcher:
    """Suggests a PSA service for a marketplace product: the service whose identifier (or name)
    equals the MPN, or whose name equals the product's (score 100), else the fuzzy name match.
    Only active services are candidates."""

    def __init__(self, services, cutoff=FUZZY_CUTOFF):
        active = [s for s in services if s.active]
        self.index = NameIndex(((s.psa_id, normalise_product_name(s.name)) for s in active), cutoff)
        self.by_code = {}
        for s in active:
            for code in {normalise_product_name(s.identifier), normalise_product_name(s.name)} - {""}:
                self.by_code.setdefault(code, []).append(s.psa_id)

    def suggest(self, mpn, name):
        code = normalise_product_name(mpn)
        by_code = sorted(set(self.by_code.get(code, []))) if code else []
        if len(by_code) == 1:
            return Suggestion(SUGGESTED, by_code[0], 100.0, "identifier")
        if by_code:
            return _unmapped(f"{len(by_code)} PSA service candidates match MPN {mpn}: {', '.join(by_code)}")
        key = normalise_product_name(name)
        return _decide(self.index.exact.get(key, []), [], self.index, key, "PSA service")

    def suggest_all(self, products):
        """{mpn: Suggestion} for (mpn, name) pairs."""
        return {mpn: self.suggest(mpn, name) for mpn, name in products}


def suggest_contract(company_id, contracts):
    """The customer's PSA company has exactly one active recurring contract -> suggest it."""
    if not company_id:
        return _unmapped("the customer is not mapped to a PSA company")
    found = sorted(c.psa_id for c in contracts if c.company_id == company_id and c.active and c.recurring)
    if len(found) == 1:
        return Suggestion(SUGGESTED, found[0], 100.0, "only_contract")
    if not found:
        return _unmapped(f"company {company_id} has no active recurring contract")
    return _unmapped(f"company {company_id} has {len(found)} active recurring contracts: {', '.join(found)}")


def reference_problem(kind, psa_id, reference, *, company_id=None):
    """Why a mapped PSA record can not be billed any more, or None. ``reference`` is the
    cached PsaCompany / PsaService / PsaContract (None = gone). For contracts, ``company_id``
    is the company the line's customer is mapped to."""
    if reference is None:
        return f"PSA {kind} {psa_id} no longer exists"
    if not reference.active:
        return f"PSA {kind} {psa_id} is inactive"
    if kind == "contract":
        if not getattr(reference, "recurring", True):
            return f"PSA contract {psa_id} is not a recurring contract"
        if company_id and reference.company_id != company_id:
            return f"PSA contract {psa_id} belongs to company {reference.company_id}, not {company_id}"
    return None


def status_after_check(status, problem):
    """The mapping status once the reference was checked: mapped + problem -> conflict;
    suggested + problem -> unmapped (the suggestion is dropped); a conflict whose reference is
    fine again -> mapped (only call it for reference conflicts). unmapped/ignored stay."""
    if status in (UNMAPPED, IGNORED):
        return status
    if problem:
        return CONFLICT if status in (MAPPED, CONFLICT) else UNMAPPED
    return MAPPED if status == CONFLICT else status


def check_mapping(status, kind, psa_id, reference, *, company_id=None):
    """(new status, reason or None) of one mapping item after its PSA record was looked up:
    reference_problem + status_after_check. Unmapped/ignored items are not checked."""
    if status in (UNMAPPED, IGNORED) or not psa_id:
        return status, None
    problem = reference_problem(kind, psa_id, reference, company_id=company_id)
    return status_after_check(status, problem), problem
