"""The billing portal in a real browser (Chromium through Playwright) against the whole stack.

Set-up: the demo tenants; one marketplace customer named exactly like an Autotask company of the
Northwind tenant (so the mapping service suggests it) with one subscription line; a full
marketplace sync; the PSA records read; posting mode "review" (so a completed mapping waits in
the approval queue). Then a billing person maps customer, product and line from the three
screens, sees the statuses turn green, previews the invoice, approves the change with a note,
finds the line purple after someone edits it by hand in Autotask and sends it again from the
Postings page, and starts a sync; a viewer sees the same pages without any action; an admin changes the
billing settings. Screenshots: /tmp/portal-*.png.
"""
import datetime as dt
import re
import subprocess
import sys
import uuid

import pytest
import requests

from common.secrets import ROOT
from common.topology import http_port
from gateway.seed_demo import tenant_id
from services.autotask.client import AutotaskClient
from tests.support.browser import (assert_no_script_errors, chromium, flash, post_form, screenshot, sign_in,
                                   submit, value)
from tests.support.infra import wait_for

RUN = uuid.uuid4().hex[:6].upper()  # the database may outlive a run (a developer's own stack): fresh ids
CUSTOMER_ID = f"PORTAL-C-{RUN}"
SUBSCRIPTION_ID = f"PORTAL-S-{RUN}"
MPN = f"PORTAL-M365-{RUN}"
QUANTITY = 7
# the badge colours of base.html: mapped green, suggested amber, unmapped red, ignored grey
GREEN, AMBER, RED, GREY = "rgb(30, 142, 62)", "rgb(199, 119, 0)", "rgb(197, 34, 31)", "rgb(138, 143, 152)"
PURPLE = "rgb(123, 63, 191)"


def _sim(path):
    return f"http://127.0.0.1:{http_port('sim-marketplace')}{path}"


def _finished_run(rpc, tenant, run_id):
    run = rpc.marketplace.sync_run(tenant, run_id)
    return run if run["outcome"] not in ("queued", "running") else None


@pytest.fixture(scope="module")
def portal(stack):
    seeded = subprocess.run([sys.executable, "-m", "gateway.seed_demo"], cwd=ROOT, env=stack.env,
                            capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    tenant = tenant_id("northwind")
    config = requests.get(_sim("/_sim/config"), timeout=10).json()
    requests.post(_sim("/_sim/config"), json={"rate_limit_per_minute": 100000}, timeout=10).raise_for_status()
    with stack.rpc() as rpc:
        companies = rpc.autotask.browse_references(tenant, "company")
        contracts = rpc.autotask.browse_references(tenant, "contract")
        services = rpc.autotask.browse_references(tenant, "service")
        # a company with exactly one active contract (the mapping service can suggest it for the line)
        # that no customer is mapped to yet
        taken = {c["psa_company_id"] for c in rpc.mapping.customers(tenant, page=1, per_page=200)["items"]}
        active = [c for c in contracts if c.get("active", True)]
        company = next(c for c in companies if c.get("active", True) and c["psa_id"] not in taken
                       and sum(1 for k in active if str(k["company_id"]) == str(c["psa_id"])) == 1)
        contract = next(k for k in active if str(k["company_id"]) == str(company["psa_id"]))
        service = next(s for s in services if s.get("active", True) and "365" in s["name"])
        # the marketplace side: a customer named like the company, one line of a 365 product
        requests.post(_sim("/_sim/customers"), json={"id": CUSTOMER_ID, "name": company["name"]},
                      timeout=10).raise_for_status()
        added = requests.post(_sim("/_sim/subscriptions"), timeout=10, json={
            "id": SUBSCRIPTION_ID, "customerId": CUSTOMER_ID,
            "lines": [{"mpn": MPN, "name": "Microsoft 365 Business Premium (portal test)", "quantity": QUANTITY}]})
        assert added.status_code in (201, 409), added.text
        run = rpc.marketplace.sync_now(tenant, full=True)
        done = wait_for(lambda: _finished_run(rpc, tenant, run["run_id"]), timeout=60, interval=0.5,
                        message="the marketplace sync")
        assert done["outcome"] == "ok", done
        wait_for(lambda: rpc.mapping.lines(tenant, page=1, per_page=5, customer_id=CUSTOMER_ID)["total"],
                 timeout=30, interval=0.5, message="the mapping service to know the new line")
        rpc.mapping.refresh_references(tenant)
        before = rpc.mapping.settings(tenant)
        rpc.mapping.update_settings(tenant, {"posting_mode": "review"}, actor="portal-test")
    yield {"tenant": tenant, "company": company, "contract": contract, "service": service,
           "url": stack.url("gateway"), "password": stack.env["IDSYNC_DEMO_PASSWORD"], "stack": stack}
    requests.post(_sim("/_sim/config"), json={"rate_limit_per_minute": config["rate_limit_per_minute"]}, timeout=10)
    with stack.rpc() as rpc:
        keep = ("posting_mode", "threshold_units", "threshold_percent", "bill_suspended",
                "credit_decreases_immediately", "edited_in_psa")
        rpc.mapping.update_settings(tenant, {k: before[k] for k in keep if k in before}, actor="portal-test")


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def billing(portal, browser):
    page = sign_in(browser, portal["url"], "billing@northwind.example", portal["password"])
    yield page
    assert_no_script_errors(page)
    page.context.close()


@pytest.fixture
def viewer(portal, browser):
    page = sign_in(browser, portal["url"], "viewer@northwind.example", portal["password"])
    yield page
    assert_no_script_errors(page)
    page.context.close()


def _background(locator):
    return locator.evaluate("e => getComputedStyle(e).backgroundColor")


def _choose(row, psa_id, label=None):
    """Pick a PSA record in a row's map form: a <select> when the list is short, else the search box."""
    form = row.locator("form").filter(has=row.page.locator("[name=psa_id]:not([type=hidden])"))
    picker = form.locator("[name=psa_id]")
    if picker.evaluate("e => e.tagName") == "SELECT":
        picker.select_option(str(psa_id))
    else:
        picker.fill(str(psa_id))
    return form


def test_customers_screen_badges_counts_and_accepting_a_suggestion(portal, billing):
    page = billing
    page.click("nav.main >> text=Customers")
    counts = page.locator(".counts")
    assert re.search(r"\d+\s+unmapped", counts.inner_text())
    unmapped = page.locator(".badge[data-status=unmapped]").first
    assert _background(unmapped) == RED
    screenshot(page, "customers")

    page.fill("input[name=search]", portal["company"]["name"])
    submit(page.locator("button:has-text('Filter')"))
    row = page.locator(f"tr[data-key='{CUSTOMER_ID}']")
    badge = row.locator(".badge")
    assert badge.inner_text() == "Suggested" and _background(badge) == AMBER
    assert "score 100" in row.inner_text()
    assert portal["company"]["name"] in row.inner_text()
    submit(row.locator("button:has-text('Accept suggestion')"))
    assert "is mapped to" in flash(page)
    row = page.locator(f"tr[data-key='{CUSTOMER_ID}']")
    assert row.locator(".badge").inner_text() == "Mapped"
    assert _background(row.locator(".badge")) == GREEN
    screenshot(page, "customers-mapped")

    # ignore another customer (grey), then put it back (red again)
    page.goto("/mapping/customers?status=unmapped")
    row = page.locator("tr[data-key]").first
    key, name = row.get_attribute("data-key"), row.locator("td a").first.inner_text()
    submit(row.locator("button:has-text('Ignore')"))
    assert "ignored" in flash(page)
    page.goto(f"/mapping/customers?status=ignored&search={key}")
    row = page.locator(f"tr[data-key='{key}']")
    assert row.locator(".badge").inner_text() == "Ignored" and _background(row.locator(".badge")) == GREY
    submit(row.locator("button:has-text('Un-ignore')"))
    assert f"{name} is now unmapped" in flash(page)


def test_products_screen_maps_an_mpn_with_a_price_rule(portal, billing):
    page = billing
    page.goto(f"/mapping/products?search={MPN}")
    row = page.locator(f"tr[data-key='{MPN}']")
    assert row.locator(".badge").inner_text() in ("Unmapped", "Suggested")
    form = _choose(row, portal["service"]["psa_id"])
    form.locator("select[name=price_rule]").select_option("cost_plus")
    form.locator("input[name=markup_pct]").fill("20")
    submit(form.locator("button:has-text('Map')"))
    assert "is mapped to" in flash(page), flash(page)
    row = page.locator(f"tr[data-key='{MPN}']")
    assert row.locator(".badge").inner_text() == "Mapped"
    assert "cost + 20" in row.inner_text()


def test_lines_screen_links_the_contract_and_the_line_becomes_billable(portal, billing):
    page = billing
    page.goto(f"/mapping/lines?customer_id={CUSTOMER_ID}")
    row = page.locator(f"tr[data-key='{SUBSCRIPTION_ID}/{MPN}']")
    assert str(QUANTITY) in row.locator("td.num").inner_text()
    if row.locator("button:has-text('Accept suggestion')").count():
        submit(row.locator("button:has-text('Accept suggestion')"))
    else:
        submit(_choose(row, portal["contract"]["psa_id"]).locator("button:has-text('Link')"))
    assert "is linked to" in flash(page), flash(page)
    row = page.locator(f"tr[data-key='{SUBSCRIPTION_ID}/{MPN}']")
    assert row.locator(".badge[data-status]").inner_text() == "Mapped"
    def billable():
        page.reload()
        return page.locator(f"tr[data-key='{SUBSCRIPTION_ID}/{MPN}'] .badge.yes").count()
    wait_for(billable, timeout=15, interval=0.5, message="the line to become billable")
    screenshot(page, "lines")


def test_preview_then_approve_with_a_note(portal, billing):
    page = billing

    def pending_row():
        page.goto("/approvals")
        rows = page.locator("tr[data-approval]")
        return rows.first if rows.count() else None
    row = wait_for(pending_row, timeout=30, interval=1, message="the change in the approval queue")
    text = row.inner_text()
    assert str(QUANTITY) in text

    page.click("nav.main >> text=Invoice preview")
    assert page.locator("tbody tr").count() >= 1 and "Nothing to post" not in page.inner_text("main")
    assert page.locator("[data-total]").inner_text().strip()
    screenshot(page, "preview")

    page.click("nav.main >> text=Approvals")
    row = page.locator("tr[data-approval]").first
    approval_id = row.get_attribute("data-approval")
    row.locator("input[name=approval_ids]").check()
    page.fill("#note", "Checked with the customer's order")
    screenshot(page, "approvals")
    submit(page.locator("button:has-text('Approve selected')"))
    assert "1 change approved" in flash(page), flash(page)
    assert page.locator(f"tr[data-approval='{approval_id}']").count() == 0
    page.goto("/approvals?status=approved")
    decided = page.locator(f"tr[data-approval='{approval_id}']")
    assert "Checked with the customer's order" in decided.inner_text()
    assert "billing@northwind.example" in decided.inner_text()


def _posted(rpc, tenant, contract_id, quantity):
    rows = rpc.autotask.ledger(tenant, 1, 50, contract_id=str(contract_id))["items"]
    return [r for r in rows if r["state"] == "posted" and r["quantity_after"] == quantity]


def test_a_line_edited_in_autotask_turns_purple_and_is_sent_again_from_postings(portal, billing):
    """The approved line is posted (7 seats). Someone adds 3 seats by hand in Autotask, then the
    marketplace says 9: the tenant holds lines edited in the PSA, so the line shows as a purple
    conflict and waits on the Postings page until the billing person sends it again (overwrite)."""
    page, tenant, stack = billing, portal["tenant"], portal["stack"]
    contract, service = int(portal["contract"]["psa_id"]), int(portal["service"]["psa_id"])
    with stack.rpc() as rpc:
        wait_for(lambda: _posted(rpc, tenant, contract, QUANTITY), timeout=60, interval=1,
                 message="the approved line posted to Autotask")
        rpc.mapping.update_settings(tenant, {"posting_mode": "auto", "edited_in_psa": "hold"}, actor="portal-test")
        client = AutotaskClient({"zone_url": f"http://127.0.0.1:{http_port('sim-autotask')}/atservicesrest/v1.0/",
                                 "api_user": "api@northwind.example", "secret": "northwind-at-secret",
                                 "integration_code": "NORTHWINDINTEGRATION"})
        client.add_adjustment(contract, service, None, 3, dt.date.today())
        requests.post(_sim(f"/_sim/subscriptions/{SUBSCRIPTION_ID}/change"), json={"mpn": MPN, "quantity": 9},
                      timeout=10).raise_for_status()
        rpc.marketplace.sync_now(tenant)
        held = wait_for(lambda: [h for h in rpc.autotask.held_lines(tenant) if h["contract_id"] == str(contract)],
                        timeout=60, interval=1, message="the edited line held")
    assert "edited in the PSA" in held[0]["vendor_message"]

    page.goto(f"/mapping/lines?customer_id={CUSTOMER_ID}")
    badge = page.locator(f"tr[data-key='{SUBSCRIPTION_ID}/{MPN}'] [data-edited-in-psa]")
    assert badge.inner_text() == "Edited in Autotask" and _background(badge) == PURPLE
    assert "changed by hand in Autotask" in page.locator(".conflict-notice").inner_text()
    screenshot(page, "lines-edited-in-psa")

    page.click(".conflict-notice >> text=Review in Postings")
    row = page.locator(f"tr[data-posting='{held[0]['posting_id']}']")
    assert row.get_attribute("data-state") == "held"
    assert _background(row.locator("[data-state-badge]")) == PURPLE
    assert portal["contract"]["name"] in row.inner_text() and "edited in the PSA" in row.inner_text()
    screenshot(page, "postings-held")
    row.locator("input[name=posting_ids]").check()
    submit(page.locator("button:has-text('Send selected again')"))
    assert "1 operation sent round again" in flash(page), flash(page)
    with stack.rpc() as rpc:
        wait_for(lambda: _posted(rpc, tenant, contract, 9), timeout=60, interval=1,
                 message="the held line overwritten to 9 seats")
        assert not rpc.autotask.held_lines(tenant)
    page.goto("/postings")
    submit(page.locator("button:has-text('Re-read Autotask now')"))
    assert "will be read again from Autotask" in flash(page), flash(page)
    assert "asked for" in page.locator("#reconciliation").inner_text()
    page.goto("/postings?tab=log")
    assert page.locator("tr[data-state='posted']").count() >= 2
    assert page.locator("tr[data-state='superseded']").count() >= 1
    page.goto(f"/mapping/lines?customer_id={CUSTOMER_ID}")
    assert page.locator("[data-edited-in-psa]").count() == 0 and page.locator(".conflict-notice").count() == 0


def test_linked_subscriptions_report_shows_the_line_in_sync_and_exports_it(portal, billing):
    """After the overwrite above: the marketplace says 9, Autotask shows 9, in sync; the CSV has it."""
    page = billing
    page.click("nav.main >> text=Reports")
    page.fill("input[name=search]", SUBSCRIPTION_ID)
    submit(page.locator("button:has-text('Filter')"))
    row = page.locator(f"tr[data-key='{SUBSCRIPTION_ID}/{MPN}']")
    assert row.locator("[data-col=marketplace]").inner_text().split()[0] == "9"
    assert row.locator("[data-col=psa]").inner_text().split()[0] == "9"
    assert row.locator("[data-sync-badge]").inner_text() == "In sync"
    assert _background(row.locator("[data-sync-badge]")) == GREEN
    assert portal["contract"]["name"] in row.inner_text()
    screenshot(page, "report-linked")
    download = page.request.get(f"{portal['url']}/reports/linked.csv")
    headers = value(download.headers)
    assert value(download.status) == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    lines = download.text().splitlines()
    assert lines[0].startswith("customer_id,customer_name,subscription_id")
    [ours] = [x for x in lines if SUBSCRIPTION_ID in x]
    assert f",{MPN}," in ours and ",9,9," in ours and ",in_sync," in ours


def test_home_says_what_needs_a_person_with_links(portal, billing):
    page = billing
    page.goto("/")
    card = page.locator("#attention")
    with portal["stack"].rpc() as rpc:
        unmapped = rpc.mapping.lines(portal["tenant"], page=1, per_page=1, status="unmapped")["total"]
        quarantined = rpc.marketplace.quarantine(portal["tenant"], page=1, per_page=1)["total"]
    assert unmapped > 0   # the demo tenant has lines of customers nobody mapped
    row = card.locator("tr[data-attention='/mapping/lines?status=unmapped']")
    assert row.locator(".badge").inner_text() == str(unmapped)
    assert card.locator("tr[data-attention='/postings']").count() == 0   # the held line was sent again
    assert card.locator("tr[data-attention='/sync']").count() == (1 if quarantined else 0)
    screenshot(page, "home-attention")
    row.locator("a").click()
    assert "/mapping/lines" in value(page.url)


def test_not_billed_report_gives_the_revenue_held_back_per_customer(portal, billing):
    page = billing
    page.goto("/reports/linked")
    page.click("text=Not billed yet")
    with portal["stack"].rpc() as rpc:
        report = rpc.mapping.not_billed(portal["tenant"], page=1, per_page=50)
    assert report["total"] > 0 and report["totals"]      # the demo tenant has customers nobody mapped
    top = report["items"][0]
    amount = sum(float(t["amount"]) for t in report["totals"])
    assert amount >= float(top["amount"]) > 0
    held = page.locator("#held-back").inner_text()
    assert "a month held back" in held and f"{report['totals'][0]['lines']} line" in held
    row = page.locator(f"tr[data-customer='{top['customer_id']}']")
    assert f"{float(top['amount']):,.2f}" in row.locator("[data-col=amount]").inner_text()
    screenshot(page, "report-not-billed")
    row.locator("a").click()
    assert "/mapping/" in value(page.url) and top["customer_id"] in value(page.url)


def test_sync_page_lists_runs_and_starts_one(portal, billing):
    page = billing
    page.click("nav.main >> text=Sync")
    first = page.locator("tr[data-run]").first
    assert first.locator(".badge").inner_text() in ("ok", "queued", "running")
    assert "Nothing in quarantine" in page.inner_text("main") or page.locator("text=Quarantine").count()
    submit(page.locator("button:has-text('Sync now')"))
    assert "sync queued" in flash(page), flash(page)
    screenshot(page, "sync")


def test_viewer_sees_the_pages_without_any_action(portal, viewer):
    page = viewer
    page.goto("/mapping/customers")
    assert page.locator(".badge[data-status]").count() > 0
    assert page.locator("form[action='/mapping/customers/map']").count() == 0
    assert page.locator("button:has-text('Accept')").count() == 0
    assert page.locator("th:has-text('Actions')").count() == 0
    screenshot(page, "customers-viewer")
    for path in ("/mapping/products", "/mapping/lines", "/approvals", "/postings", "/postings?tab=log",
                 "/reports/linked", "/reports/not-billed", "/sync", "/settings/billing"):
        page.goto(path)
        buttons = [b for b in page.locator("main button").all_inner_texts() if b.strip() not in ("Filter", "Show")]
        assert buttons == [], (path, buttons)
    # the routes check the role too: a viewer's own session and CSRF token are not enough
    csrf = page.locator("header input[name=csrf_token]").get_attribute("value")
    status, text = post_form(page, "/mapping/customers/map", {
        "csrf_token": csrf, "customer_id": CUSTOMER_ID, "psa_id": str(portal["company"]["psa_id"])})
    assert status == 403 and "may not do this" in text and "Traceback" not in text
    status, text = post_form(page, "/postings/retry", {"csrf_token": csrf, "posting_ids": "1"})
    assert status == 403 and "may not do this" in text


def test_errors_are_sentences_on_the_page(portal, billing):
    page = billing
    page.goto(f"/mapping/customers?search={CUSTOMER_ID}")
    page.goto("/mapping/customers?status=unmapped")
    row = page.locator("tr[data-key]").first
    form = row.locator("form").filter(has=page.locator("[name=psa_id]:not([type=hidden])"))
    picker = form.locator("[name=psa_id]")
    if picker.evaluate("e => e.tagName") == "SELECT":
        picker.evaluate("e => { e.add(new Option('gone', 'no-such-company-0')); e.value = 'no-such-company-0'; }")
    else:
        picker.fill("No Such Company Anywhere Ltd")
    submit(form.locator("button:has-text('Map')"))
    message = flash(page)
    assert message and "pick one from the list" in message and "Traceback" not in page.content()
    assert page.locator(".flash.error").count() == 1
    status, text = post_form(page, "/mapping/nonsense/bulk", {
        "csrf_token": page.locator("header input[name=csrf_token]").get_attribute("value"), "action": "accept"})
    assert status == 404 and "no mapping screen" in text
    status, text = post_form(page, "/sync/now", {"csrf_token": "forged"})
    assert status == 403 and "CSRF" in text


def test_admin_changes_billing_settings(portal, browser):
    page = sign_in(browser, portal["url"], "admin@northwind.example", portal["password"])
    page.click("nav.main >> text=Settings")
    page.check("input[name=posting_mode][value=threshold]")
    page.fill("#threshold_units", "5")
    page.fill("#threshold_percent", "25")
    page.check("input[name=credit_decreases_immediately]")
    submit(page.locator("button:has-text('Save settings')"))
    assert "saved" in flash(page)
    page.reload()
    assert page.locator("input[name=posting_mode][value=threshold]").is_checked()
    assert page.input_value("#threshold_units") == "5"
    assert page.locator("input[name=credit_decreases_immediately]").is_checked()
    screenshot(page, "settings")
    with portal["stack"].rpc() as rpc:
        stored = rpc.mapping.settings(portal["tenant"])
    assert stored["posting_mode"] == "threshold" and int(stored["threshold_units"]) == 5
    assert_no_script_errors(page)
    page.context.close()
