"""Portal pages: approvals, invoice preview, marketplace sync, billing settings.

Approvals and preview come from the mapping service; sync runs and the quarantine from the
marketplace service; settings from the mapping service (admins change them).
"""
from gateway import schemas
from gateway.errors import BadRequest
from gateway.portal_support import PER_PAGE, PortalSupport, optional, page_number, page_route, text_arg
from gateway.routes_mapping import _json_safe

APPROVAL_STATUSES = ("pending", "approved", "rejected", "superseded")
POSTING_MODES = {"auto": "Automatic: post every change at once",
                 "review": "Review: every change waits for approval",
                 "threshold": "Threshold: post automatically unless a change is large or moves a price"}
EDITED_IN_PSA = {"overwrite": "Overwrite: post the difference to match the marketplace",
                 "hold": "Hold: flag it and wait for a person"}
SETTING_FLAGS = ("bill_suspended", "credit_decreases_immediately")


class BillingPages(PortalSupport):
    # --- approvals -----------------------------------------------------------------------------
    @page_route("GET", "/approvals")
    def approvals_page(self, request):
        view = self.view(request)
        status = text_arg(request, "status", APPROVAL_STATUSES) or "pending"
        listing, error = self.attempt(self.mapping.approvals, view.principal.tenant_id, page=page_number(request),
                                      per_page=PER_PAGE, status=status)
        listing = listing or {"items": [], "total": 0, "page": 1, "pages": 0}
        return self.render(view, "approvals.html", active="approvals", status=status, listing=listing,
                           items=listing.get("items") or [], errors=[error] if error else [],
                           statuses=APPROVAL_STATUSES, back=view.url())

    @page_route("POST", "/approvals/decide")
    def decide_form(self, request):
        view = self.view(request, "billing")

        def action():
            ids = [i for i in request.form.getlist("approval_ids") if i.strip()]
            if not ids:
                raise BadRequest("Tick at least one change to approve or reject.")
            body = schemas.Decision().load({"approval_ids": ids, "decision": request.form.get("decision"),
                                            "note": optional(request.form, "note"),
                                            "effective_date": optional(request.form, "effective_date")})
            date = body["effective_date"].isoformat() if body["effective_date"] else None
            self.call(self.mapping.decide, view.principal.tenant_id, body["approval_ids"], body["decision"],
                      note=body["note"], effective_date=date, actor=view.actor)
            verb = "approved" if body["decision"] == "approve" else "rejected"
            dated = f", effective {date}" if date else ""
            return f"{len(ids)} change{'s' if len(ids) != 1 else ''} {verb}{dated}."
        return self.act(request, "/approvals", action)

    # --- preview -------------------------------------------------------------------------------
    @page_route("GET", "/preview")
    def preview_page(self, request):
        view = self.view(request)
        preview, error = self.attempt(self.mapping.preview, view.principal.tenant_id)
        preview = preview or {"rows": [], "total_amount": None}
        return self.render(view, "preview.html", active="preview", rows=preview.get("rows") or [],
                           total_amount=preview.get("total_amount"), preview=preview,
                           errors=[error] if error else [])

    # --- marketplace sync ----------------------------------------------------------------------
    @page_route("GET", "/sync")
    def sync_page(self, request):
        view = self.view(request)
        tenant_id = view.principal.tenant_id
        results, errors = self.gather({
            "runs": (self.marketplace.sync_runs, (tenant_id,), {"page": page_number(request), "per_page": 20}),
            "quarantine": (self.marketplace.quarantine, (tenant_id,), {"page": 1, "per_page": PER_PAGE}),
        })
        runs = results["runs"] or {"items": [], "total": 0, "page": 1, "pages": 0}
        quarantine = results["quarantine"] or {"items": [], "total": 0}
        return self.render(view, "sync.html", active="sync", runs=runs, quarantine=quarantine, errors=errors)

    @page_route("POST", "/sync/now")
    def sync_now_form(self, request):
        view = self.view(request, "billing")

        def action():
            full = request.form.get("full") in ("1", "on", "true")
            run = self.call(self.marketplace.sync_now, view.principal.tenant_id, full=full)
            return (f"{'Full' if full else 'Incremental'} sync queued (run {run.get('run_id')}); "
                    "reload this page to follow it.")
        return self.act(request, "/sync", action)

    # --- billing settings ----------------------------------------------------------------------
    @page_route("GET", "/settings/billing")
    def settings_page(self, request):
        view = self.view(request)
        settings, error = self.attempt(self.mapping.settings, view.principal.tenant_id)
        return self.render(view, "settings_billing.html", active="settings", settings=settings or {},
                           errors=[error] if error else [], modes=POSTING_MODES, edited_choices=EDITED_IN_PSA)

    @page_route("POST", "/settings/billing")
    def settings_form(self, request):
        view = self.view(request, "admin")

        def action():
            changes = _settings_changes(request.form)
            self.call(self.mapping.update_settings, view.principal.tenant_id, changes, actor=view.actor)
            return "Billing settings saved."
        return self.act(request, "/settings/billing", action)


def _settings_changes(form):
    data = {"posting_mode": form.get("posting_mode"), "edited_in_psa": form.get("edited_in_psa"),
            "threshold_units": optional(form, "threshold_units"),
            "threshold_percent": optional(form, "threshold_percent")}
    data = {k: v for k, v in data.items() if not (k in ("posting_mode", "edited_in_psa") and v is None)}
    for name in SETTING_FLAGS:  # an unticked checkbox sends nothing: that means "no"
        data[name] = form.get(name) in ("1", "on", "true")
    return _json_safe(schemas.BillingSettings().load(data))
