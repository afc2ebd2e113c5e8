import random
import string

import pytest

from services.mapping.domain import (CompanyMatcher, PsaCompany, PsaContract, PsaService, ServiceMatcher,
                                     normalise_domain, normalise_name, normalise_product_name, reference_problem,
                                     status_after_check, suggest_contract)


# --- normalisation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, key", [
    ("Acme", "acme"),
    ("ACME, Inc.", "acme"),
    ("  acme   inc ", "acme"),
    ("Acme LLC", "acme"),
    ("Acme L.L.C.", "acme"),
    ("Acme Ltd", "acme"),
    ("Acme Limited", "acme"),
    ("Acme Pty Ltd", "acme"),
    ("Acme Co., Ltd.", "acme"),
    ("Acme Corporation", "acme"),
    ("Müller GmbH", "muller"),
    ("Müller GmbH & Co. KG", "muller"),
    ("Smith & Jones", "smith and jones"),
    ("O'Neil-Brothers", "oneil brothers"),
    ("Inc.", "inc"),
    ("Incorporated Widgets", "incorporated widgets"),
    ("", ""),
    (None, ""),
])
def test_normalise_name(raw, key):
    assert normalise_name(raw) == key


def test_product_names_keep_every_token():
    assert normalise_product_name("Microsoft 365 Business Premium (Annual)") == "microsoft 365 business premium annual"
    assert normalise_product_name("Backup Co") == "backup co"


@pytest.mark.parametrize("raw, domain", [
    ("acme.com", "acme.com"),
    ("https://www.Acme.com/about", "acme.com"),
    ("http://acme.co.uk:8080?x=1", "acme.co.uk"),
    ("bob@Acme.com", "acme.com"),
    ("ACME.COM.", "acme.com"),
    ("mail.acme.com", "mail.acme.com"),
    ("localhost", ""),
    ("", ""),
    (None, ""),
])
def test_normalise_domain(raw, domain):
    assert normalise_domain(raw) == domain


# --- companies ------------------------------------------------------------------------------------------
COMPANIES = [
    PsaCompany("1", "Acme Incorporated", domains=("https://www.acme.com",)),
    PsaCompany("2", "Globex Corporation", domains=("info@globex.io",)),
    PsaCompany("3", "Initech LLC"),
    PsaCompany("4", "Umbrella Holdings", active=False),
    PsaCompany("5", "Contoso Pharmaceuticals", domains=("gmail.com",)),
    PsaCompany("6", "Northwind Traders"),
    PsaCompany("7", "Northwind Tradery"),
]
MATCHER = CompanyMatcher(COMPANIES)


def test_exact_name_with_legal_suffix_differences_scores_100():
    s = MATCHER.suggest("ACME, Inc.")
    assert (s.status, s.psa_id, s.score, s.method) == ("suggested", "1", 100.0, "exact_name")


def test_domain_match_scores_100():
    s = MATCHER.suggest("Totally Different Name", domains=["someone@globex.io"])
    assert (s.status, s.psa_id, s.score, s.method) == ("suggested", "2", 100.0, "domain")


def test_domain_accepts_a_single_string():
    assert MATCHER.suggest("Nope", "www.acme.com").psa_id == "1"


def test_free_mail_domains_never_match():
    assert MATCHER.suggest("Somebody", domains=["joe@gmail.com"]).status == "unmapped"


def test_fuzzy_match_above_the_cutoff_with_its_score():
    s = MATCHER.suggest("Initeck")
    assert (s.status, s.psa_id, s.method) == ("suggested", "3", "fuzzy_name")
    assert 85 <= s.score < 100


def test_fuzzy_is_token_order_insensitive():
    s = MATCHER.suggest("Pharmaceuticals Contoso")
    assert (s.status, s.psa_id, s.score) == ("suggested", "5", 100.0)


def test_typo_in_a_first_letter_still_matches():
    # 'initech fabrics' vs 'initech xabrics': sorting the words would move the typo
    matcher = CompanyMatcher([PsaCompany("9", "Initech Fabrics Ltd"), PsaCompany("8", "Other Thing")])
    s = matcher.suggest("Initech Xabrics")
    assert (s.status, s.psa_id) == ("suggested", "9") and s.score >= 90


def test_below_the_cutoff_is_unmapped():
    s = MATCHER.suggest("Wayne Enterprises")
    assert s.status == "unmapped" and s.psa_id is None and "85" in s.reason


def test_inactive_companies_are_not_suggested():
    assert MATCHER.suggest("Umbrella Holdings").status == "unmapped"


def test_fuzzy_tie_is_unmapped():
    s = MATCHER.suggest("Northwind Tradert")   # one letter from both 6 and 7
    assert s.status == "unmapped" and "tie" in s.reason and "6" in s.reason and "7" in s.reason


def test_two_exact_name_matches_are_unmapped():
    matcher = CompanyMatcher([PsaCompany("1", "Acme Inc"), PsaCompany("2", "ACME LLC")])
    s = matcher.suggest("Acme")
    assert s.status == "unmapped" and "exact name" in s.reason


def test_two_companies_sharing_a_domain_are_unmapped():
    matcher = CompanyMatcher([PsaCompany("1", "A", domains=("x.com",)), PsaCompany("2", "B", domains=("x.com",))])
    assert "share this domain" in matcher.suggest("Zzz", domains=["x.com"]).reason


def test_exact_name_and_domain_disagreeing_are_unmapped():
    s = MATCHER.suggest("Initech", domains=["acme.com"])
    assert s.status == "unmapped" and "domain" in s.reason


def test_exact_name_and_domain_agreeing_is_suggested():
    assert MATCHER.suggest("Acme", domains=["acme.com"]).psa_id == "1"


def test_custom_cutoff():
    strict = CompanyMatcher(COMPANIES, cutoff=99)
    assert strict.suggest("Initeck").status == "unmapped"


def test_empty_name_without_domain_is_unmapped():
    assert MATCHER.suggest("").status == "unmapped"


def test_no_candidates_at_all():
    assert CompanyMatcher([]).suggest("Acme").status == "unmapped"


def test_suggest_all():
    out = MATCHER.suggest_all([("c1", "Acme Inc", ()), ("c2", "Nobody", ())])
    assert out["c1"].psa_id == "1" and out["c2"].status == "unmapped"


def _name(rng, words):
    return " ".join(rng.sample(words, rng.randint(2, 4)))


def test_two_thousand_by_two_thousand_match():
    rng = random.Random(7)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9))) for _ in range(4000)]
    companies = [PsaCompany(str(i), _name(rng, words).title() + rng.choice([" Inc", " LLC", " GmbH", ""]))
                 for i in range(2000)]
    customers = []
    for i in range(2000):
        base = companies[i].name
        if i % 4 == 0:                     # exact after normalisation
            customers.append((f"c{i}", base.upper() + ", Ltd.", ()))
        elif i % 4 == 1:                   # one typo
            pos = len(base) // 2
            customers.append((f"c{i}", base[:pos] + "x" + base[pos + 1:], ()))
        elif i % 4 == 2:                   # words reordered
            customers.append((f"c{i}", " ".join(reversed(normalise_name(base).split())), ()))
        else:                              # unrelated
            customers.append((f"c{i}", _name(rng, words) + " zzqq", ()))
    matcher = CompanyMatcher(companies)
    out = matcher.suggest_all(customers)
    assert len(out) == 2000
    for i in range(0, 2000, 4):
        assert (out[f"c{i}"].psa_id, out[f"c{i}"].method) == (str(i), "exact_name")
        assert out[f"c{i + 2}"].psa_id == str(i + 2) and out[f"c{i + 2}"].score == 100.0
    typos = [out[f"c{i}"] for i in range(1, 2000, 4)]
    assert sum(s.psa_id == str(i) for s, i in zip(typos, range(1, 2000, 4))) >= 495
    assert all(s.score is None or s.score >= 85 for s in out.values())
    assert sum(out[f"c{i}"].status == "unmapped" for i in range(3, 2000, 4)) >= 490


# --- products --------------------------------------------------------------------------------------------
SERVICES = [
    PsaService("s1", "Microsoft 365 Business Premium", identifier="CFQ7TTC0LCHC:0002"),
    PsaService("s2", "Microsoft 365 Business Basic"),
    PsaService("s3", "Exchange Online (Plan 1)"),
    PsaService("s4", "Old Service", active=False, identifier="OLD-1"),
    PsaService("s5", "AZ-PLAN"),
]
SERVICE_MATCHER = ServiceMatcher(SERVICES)


def test_identifier_equal_to_the_mpn_scores_100():
    s = SERVICE_MATCHER.suggest("cfq7ttc0lchc:0002", "Something else")
    assert (s.psa_id, s.score, s.method) == ("s1", 100.0, "identifier")


def test_service_named_like_the_mpn_scores_100():
    assert SERVICE_MATCHER.suggest("az-plan", "Azure plan").psa_id == "s5"


def test_exact_product_name_scores_100():
    s = SERVICE_MATCHER.suggest("X-1", "microsoft 365 business basic")
    assert (s.psa_id, s.method) == ("s2", "exact_name")


def test_fuzzy_product_name():
    s = SERVICE_MATCHER.suggest("X-2", "Exchange Online Plan1")
    assert (s.status, s.psa_id, s.method) == ("suggested", "s3", "fuzzy_name")


def test_similar_products_below_cutoff_stay_unmapped():
    assert SERVICE_MATCHER.suggest("X-3", "Microsoft 365 E5").status == "unmapped"


def test_inactive_service_is_not_suggested():
    assert SERVICE_MATCHER.suggest("OLD-1", "Old Service").status == "unmapped"


def test_two_services_with_the_mpn_are_unmapped():
    m = ServiceMatcher([PsaService("a", "One", identifier="M1"), PsaService("b", "Two", identifier="m1")])
    assert "2 PSA service candidates" in m.suggest("M1", "whatever").reason


def test_services_suggest_all():
    assert SERVICE_MATCHER.suggest_all([("X-1", "Microsoft 365 Business Basic")])["X-1"].psa_id == "s2"


# --- contracts -------------------------------------------------------------------------------------------
CONTRACTS = [
    PsaContract("k1", "Managed 365", "co-1"),
    PsaContract("k2", "Old", "co-1", active=False),
    PsaContract("k3", "Block hours", "co-1", recurring=False),
    PsaContract("k4", "Cloud", "co-2"),
    PsaContract("k5", "Cloud 2", "co-2"),
]


def test_the_only_active_recurring_contract_is_suggested():
    s = suggest_contract("co-1", CONTRACTS)
    assert (s.status, s.psa_id, s.method) == ("suggested", "k1", "only_contract")


def test_several_contracts_are_unmapped():
    s = suggest_contract("co-2", CONTRACTS)
    assert s.status == "unmapped" and "2 active recurring contracts" in s.reason


def test_no_contract_is_unmapped():
    assert "no active recurring contract" in suggest_contract("co-3", CONTRACTS).reason


def test_unmapped_customer_gets_no_contract():
    assert suggest_contract(None, CONTRACTS).status == "unmapped"


# --- reference checks ----------------------------------------------------------------------------------------
def test_gone_record_is_a_problem():
    assert reference_problem("company", "7", None) == "PSA company 7 no longer exists"


def test_inactive_record_is_a_problem():
    assert reference_problem("service", "s4", SERVICES[3]) == "PSA service s4 is inactive"


def test_non_recurring_contract_is_a_problem():
    assert "not a recurring" in reference_problem("contract", "k3", CONTRACTS[2])


def test_contract_of_another_company_is_a_problem():
    assert "belongs to company co-2" in reference_problem("contract", "k4", CONTRACTS[3], company_id="co-1")


def test_healthy_record_has_no_problem():
    assert reference_problem("contract", "k1", CONTRACTS[0], company_id="co-1") is None


@pytest.mark.parametrize("status, problem, after", [
    ("mapped", "gone", "conflict"),
    ("mapped", None, "mapped"),
    ("suggested", "gone", "unmapped"),
    ("suggested", None, "suggested"),
    ("conflict", "gone", "conflict"),
    ("conflict", None, "mapped"),
    ("unmapped", "gone", "unmapped"),
    ("ignored", "gone", "ignored"),
])
def test_status_after_check(status, problem, after):
    assert status_after_check(status, problem) == after


@pytest.mark.parametrize("status, ref, after, has_reason", [
    ("mapped", None, "conflict", True),
    ("mapped", PsaCompany("1", "Acme", active=False), "conflict", True),
    ("mapped", PsaCompany("1", "Acme"), "mapped", False),
    ("conflict", PsaCompany("1", "Acme"), "mapped", False),
    ("suggested", None, "unmapped", True),
    ("ignored", None, "ignored", False),
])
def test_check_mapping(status, ref, after, has_reason):
    from services.mapping.domain import check_mapping
    new_status, reason = check_mapping(status, "company", "1", ref)
    assert new_status == after and bool(reason) == has_reason
