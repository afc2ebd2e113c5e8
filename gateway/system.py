"""Ask every process for its health, in parallel, for the portal's status panel."""
import os

import eventlet
import requests

from common.topology import SERVICES, SIMULATORS, http_port


def _address(name):
    # in Kubernetes each service has its own host: IDSYNC_<NAME>_HEALTH_URL says where
    return os.environ.get(f"IDSYNC_{name.upper().replace('-', '_')}_HEALTH_URL",
                          f"http://127.0.0.1:{http_port(name)}" + ("/_sim/health" if name.startswith("sim-") else "/health"))


def _probe(item):
    name, url = item
    try:
        r = requests.get(url, timeout=3)
        return name, {"status": "ok" if r.status_code == 200 else "degraded", "http": r.status_code}
    except requests.RequestException as exc:
        return name, {"status": "down", "reason": type(exc).__name__}


def health_of_all():
    targets = [(n, _address(n)) for n in [*SERVICES, *SIMULATORS] if n != "gateway"]
    pool = eventlet.GreenPool(len(targets))
    results = dict(pool.imap(_probe, targets))
    results["gateway"] = {"status": "ok", "http": 200}
    return {"status": "ok" if all(v["status"] == "ok" for v in results.values()) else "degraded",
            "processes": results}
