"""Portal page: what reached the PSA and what did not (served by the tenant's autotask or connectwise
service).

"Needs a person" is the failure log: operations held because the line was edited in the PSA (the
tenant holds such lines), dead ones (the PSA kept refusing: its message says why) and failed ones
being retried; a billing person ticks them and sends them round again (a held line is then
overwritten; the PSA is read again first, so what is posted is what the PSA needs now).
"Adjustments log" is every operation, newest first, with its state. Contracts and services are
named from the mapping service's copy of the PSA records.
"""
from gateway.errors import BadRequest
from gateway.portal_support import PER_PAGE, PortalSupport, page_number, page_route, text_arg

TABS = ("attention", "log")
LOG_STATES = ("posted", "planned", "posting", "failed", "dead", "held", "superseded")
STATE_LABELS = {"held": "Edited in PSA", "dead": "Dead", "failed": "Retrying", "posted": "Posted",
                "planned": "Planned", "posting": "Sending", "superseded": "Superseded"}
OPERATION_LABELS = {"edited_in_psa": "edited in PSA"}


ATTENTION_SECONDS = 5   # the home page does not wait long for a service that is down


class PostingPages(PortalSupport):
    def _psa_proxy(self, view):
        psa = view.tenant.get("psa")
        return {"autotask": self.autotask, "connectwise": self.connectwise}.get(psa)

    def needs_attention(self, tenant):
        """What waits for a person, for the home page: ([(label, count, link)], [problems])."""
        tid = tenant["id"]
        calls = {}
        for screen in ("customers", "products", "lines"):
            for status in ("unmapped", "suggested"):
                calls[f"{screen}:{status}"] = (getattr(self.mapping, screen), (tid,),
                                               {"page": 1, "per_page": 1, "status": status})
        calls["lines:all"] = (self.mapping.lines, (tid,), {"page": 1, "per_page": 1})
        calls["approvals"] = (self.mapping.approvals, (tid,), {"page": 1, "per_page": 1, "status": "pending"})
        calls["quarantine"] = (self.marketplace.quarantine, (tid,), {"page": 1, "per_page": 1})
        psa = {"autotask": self.autotask, "connectwise": self.connectwise}.get(tenant.get("psa"))
        if psa is not None:
            calls["postings"] = (psa.posting_status, (tid,), {})
        results, errors = self.gather(calls, seconds=ATTENTION_SECONDS)

        def total(name):
            return int((results.get(name) or {}).get("total") or 0)
        items = []
        for screen in ("customers", "products", "lines"):
            items.append((f"Unmapped {screen}", total(f"{screen}:unmapped"), f"/mapping/{screen}?status=unmapped",
                          "unmapped"))
            items.append((f"Suggested {screen} to confirm", total(f"{screen}:suggested"),
                          f"/mapping/{screen}?status=suggested", "suggested"))
        items.append(("Changes waiting for approval", total("approvals"), "/approvals", "pending"))
        lines = ((results.get("postings") or {}).get("lines") or {})
        items.append((f"Lines edited in {str(tenant.get('psa') or 'the PSA').title()}, held", int(lines.get("held") or 0),
                      "/postings", "conflict"))
        items.append(("Operations the PSA refused (dead)", int(lines.get("failed") or 0), "/postings", "failed"))
        items.append(("Marketplace records in quarantine", total("quarantine"), "/sync", "failed"))
        if results.get("lines:all") is not None and not total("lines:all"):
            items.append(("No subscription line has come from the marketplace yet: start a sync", 1, "/sync",
                          "neutral"))
        return [i for i in items if i[1]], errors

    @page_route("GET", "/postings")
    def postings_page(self, request):
        view = self.view(request)
        tenant_id = view.principal.tenant_id
        tab = text_arg(request, "tab", TABS) or "attention"
        state = text_arg(request, "state", ("",) + LOG_STATES) if tab == "log" else ""
        proxy = self._psa_proxy(view)
        calls = {"attention": (proxy.failures, (tenant_id,),
                               {"page": page_number(request) if tab == "attention" else 1, "per_page": PER_PAGE}),
                 "status": (proxy.posting_status, (tenant_id,), {})}
        if tab == "log":
            calls["log"] = (proxy.ledger, (tenant_id,),
                            {"page": page_number(request), "per_page": PER_PAGE, "state": state or None})
        results, errors = self.gather(calls)
        empty = {"items": [], "total": 0, "page": 1, "pages": 0}
        attention = results["attention"] or empty
        listing = (results.get("log") if tab == "log" else attention) or empty
        items = listing.get("items") or []
        names, more = self._names(tenant_id, items)
        reconciliation = (results.get("status") or {}).get("reconciliation")
        return self.render(view, "postings.html", active="postings", tab=tab, state=state, listing=listing,
                           reconciliation=reconciliation,
                           items=items, attention_total=attention.get("total") or 0, names=names,
                           errors=errors + more, log_states=LOG_STATES, state_labels=STATE_LABELS,
                           operation_labels=OPERATION_LABELS, back=view.url())

    def _names(self, tenant_id, items):
        """({"contract": {id: name}, "service": {id: name}}, [problems]) for the rows shown."""
        calls = {kind: (self.mapping.reference_names, (tenant_id, kind, sorted({str(i[f"{kind}_id"]) for i in items})),
                        {}) for kind in ("contract", "service")} if items else {}
        results, errors = self.gather(calls)
        return {k: results.get(k) or {} for k in ("contract", "service")}, errors

    @page_route("POST", "/postings/reconcile")
    def reconcile_form(self, request):
        view = self.view(request, "billing")

        def action():
            out = self.call(self._psa_proxy(view).reconcile_now, view.principal.tenant_id) or {}
            n = int(out.get("lines") or 0)
            psa = str(view.tenant.get("psa") or "the PSA").title()
            behind = int(out.get("behind") or 0)
            caught_up = (f" {behind} contract line{'s' if behind != 1 else ''} had missed a change on the way from "
                         "the mapping and will be posted now." if behind else "")
            if not n:
                return f"No contract line is in sync right now, so there is nothing to re-read from {psa}.{caught_up}"
            return (f"{n} contract line{'s' if n != 1 else ''} will be read again from {psa} in the next minutes: "
                    "a line changed there by hand shows up here, held or overwritten per your billing settings."
                    f"{caught_up}")
        return self.act(request, "/postings", action)

    @page_route("POST", "/postings/retry")
    def retry_postings_form(self, request):
        view = self.view(request, "billing")

        def action():
            raw = [i for i in request.form.getlist("posting_ids") if i.strip()]
            if not raw:
                raise BadRequest("Tick at least one operation to send again.")
            try:
                ids = [int(i) for i in raw]
            except ValueError:
                raise BadRequest("Those operations are not ones this page listed.") from None
            done = self.call(self._psa_proxy(view).retry, view.principal.tenant_id, ids)
            n = int((done or {}).get("retried") or 0)
            if not n:
                return "Nothing was sent again: those operations were already dealt with."
            return (f"{n} operation{'s' if n != 1 else ''} sent round again: the PSA is read first, "
                    "then whatever it needs is posted.")
        return self.act(request, "/postings", action)
