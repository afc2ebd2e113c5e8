"""Marketplace sync, its runs, quarantined records and the synced snapshot (served by marketplace)."""
from gateway.api import flag, query_args, read_json, remote, route, json_response
from gateway import schemas


class SyncRoutes:
    @route("POST", "/api/v1/sync", "Start a marketplace sync now (incremental, or full)", capability="billing",
           tags=("sync",), body=schemas.SyncRequest)
    def start_sync(self, request):
        p = self.caller.require("billing")
        body = read_json(request, schemas.SyncRequest()) if request.get_data() else {}
        run = remote(self.config, self.marketplace.sync_now, p.tenant_id, full=body.get("full", False))
        return json_response(run, status=202)

    @route("GET", "/api/v1/sync/runs", "Sync runs, newest first", tags=("sync",))
    def sync_runs(self, request):
        p = self.caller.require("read")
        return remote(self.config, self.marketplace.sync_runs, p.tenant_id, **query_args(request, "page", "per_page"))

    @route("GET", "/api/v1/sync/runs/<run_id>", "One sync run with its counts", tags=("sync",))
    def sync_run(self, request, run_id):
        p = self.caller.require("read")
        return remote(self.config, self.marketplace.sync_run, p.tenant_id, run_id)

    @route("GET", "/api/v1/quarantine", "Marketplace records refused by validation, with the reason",
           tags=("sync",))
    def quarantine(self, request):
        p = self.caller.require("read")
        args = query_args(request, "page", "per_page", "include_resolved")
        if "include_resolved" in args:
            args["include_resolved"] = flag(args["include_resolved"])
        return remote(self.config, self.marketplace.quarantine, p.tenant_id, **args)

    @route("GET", "/api/v1/subscription-lines", "The synced marketplace subscription lines", tags=("sync",))
    def subscription_lines(self, request):
        p = self.caller.require("read")
        return remote(self.config, self.marketplace.subscription_lines, p.tenant_id,
                      **query_args(request, "page", "per_page", "search", "status"))
