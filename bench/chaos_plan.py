"""The chaos schedule of one run: what goes wrong, when, for how long (pure, seeded, printable).

``plan(seed, seconds, ...)`` -> sorted ``Action`` list. Same seed and arguments, same schedule: a
failing run is replayed with ``python -m bench.chaos --runs 1 --seed N`` (the timing of the product
under it is not reproducible, the schedule is).

Kinds:
- ``kill``  SIGKILL one service process (by pid), start it again ``down`` seconds later;
- ``rmq``   stop (``stop``: rabbitmqctl shutdown) or crash (``kill``: SIGKILL of the Erlang VM) the
            run's own RabbitMQ, start it again ``down`` seconds later;
- ``pg``    stop the run's own PostgreSQL (``fast`` or ``immediate`` = crash), start it ``down`` s later;
- ``fault`` one vendor fault rule on one simulator for ``duration`` seconds (kit faults:
            429, 5xx, latency, timeout, drop_after_write), then cleared.
"""
import dataclasses
import random

KILLABLE = ("marketplace", "mapping", "autotask", "connectwise", "reporting")
SIMULATORS = ("sim-marketplace", "sim-autotask", "sim-connectwise")

# every vendor call but the discovery ones (zone lookup, company info, token) - those would only
# delay the client, and the token POST is where the marketplace client starts
_API = {
    "sim-marketplace": r"^GET /marketplace/",
    "sim-autotask": r"^(GET|POST|PATCH) /ATServicesRest/V1\.0/(?!ZoneInformation)",
    "sim-connectwise": r"^(GET|POST|PATCH|PUT) /v4_6_release/apis/3\.0/",
}
# the writes whose answer can be lost after the vendor applied them (the marketplace takes none)
_WRITES = {
    "sim-autotask": r"^(POST|PATCH) /ATServicesRest/V1\.0/(ContractServiceAdjustments|Contracts/\d+/Services)$",
    "sim-connectwise": r"^(POST|PATCH) /v4_6_release/apis/3\.0/finance/agreements/\d+/additions",
}
FAULT_KINDS = ("429", "5xx", "latency", "timeout", "drop_after_write")


@dataclasses.dataclass(frozen=True)
class Action:
    at: float                     # seconds after the chaos phase began
    kind: str                     # kill | rmq | pg | fault
    target: str                   # service, "rabbitmq", "postgresql" or simulator
    params: tuple = ()            # sorted (key, value) pairs

    @property
    def p(self):
        return dict(self.params)

    def describe(self):
        p = self.p
        if self.kind == "kill":
            return f"t+{self.at:5.1f}s SIGKILL {self.target}, restart after {p['down']:.1f}s"
        if self.kind in ("rmq", "pg"):
            return f"t+{self.at:5.1f}s {self.target} {p['mode']} for {p['down']:.1f}s"
        rule = p["rule"]
        extra = ", ".join(f"{k}={rule[k]}" for k in ("status", "rate", "seconds") if rule.get(k) is not None)
        return f"t+{self.at:5.1f}s {self.target} fault {p['label']} ({extra}) for {p['duration']:.1f}s"


def _action(at, kind, target, **params):
    return Action(round(at, 2), kind, target, tuple(sorted(params.items())))


def fault_rule(rng, sim, kind):
    """One kit fault rule (POST /_sim/faults body) of ``kind`` for ``sim``."""
    api = _API[sim]
    if kind == "429":
        return {"endpoint": api, "kind": "status", "status": 429, "rate": rng.choice([0.2, 0.3, 0.5]),
                "seconds": rng.choice([1, 2])}
    if kind == "5xx":
        return {"endpoint": api, "kind": "status", "status": rng.choice([500, 502, 503]),
                "rate": rng.choice([0.1, 0.2, 0.3])}
    if kind == "latency":
        return {"endpoint": api, "kind": "latency", "rate": rng.choice([0.3, 0.5, 1.0]),
                "seconds": round(rng.uniform(0.5, 3.0), 1)}
    if kind == "timeout":
        # shorter than the clients' read timeout (a 504: outcome unknown) or longer (the client gives up)
        return {"endpoint": api, "kind": "timeout", "rate": rng.choice([0.1, 0.2]),
                "seconds": rng.choice([2, 5, 12])}
    if kind == "drop_after_write":
        return {"endpoint": _WRITES[sim], "kind": "drop_after_write", "rate": rng.choice([0.2, 0.3, 0.5])}
    raise ValueError(kind)


def plan(seed, seconds, *, kills=None, infra=True, faults=True, killable=KILLABLE, rmq_modes=("stop", "kill")):
    """The schedule of one run of ``seconds`` of chaos (everything starts before ``seconds``; the
    last outages may end a little after it - the quiet phase waits for them)."""
    rng = random.Random(f"chaos-plan/{seed}")
    actions = []
    # --- service kills: never two of one service at once ------------------------------------------
    n_kills = kills if kills is not None else max(1, round(seconds / 30 + rng.randint(0, 2)))
    busy_until = {name: -1.0 for name in killable}
    for _ in range(n_kills):
        for _attempt in range(10):
            at = rng.uniform(2, seconds * 0.9)
            name = rng.choice(killable)
            down = rng.choice([0.5, 2.0, 5.0, rng.uniform(5, 15)])
            if at > busy_until[name] + 3:
                busy_until[name] = at + down + 10   # restart (health wait) takes a few seconds too
                actions.append(_action(at, "kill", name, down=round(down, 1)))
                break
    # --- the broker and the database: at most one outage of each per run --------------------------
    if infra:
        if rng.random() < 0.6 and rmq_modes:
            actions.append(_action(rng.uniform(seconds * 0.15, seconds * 0.7), "rmq", "rabbitmq",
                                   mode=rng.choice(list(rmq_modes)), down=round(rng.uniform(1, 12), 1)))
        if rng.random() < 0.6:
            # mostly shorter than the event handlers' retry ladder (1+3+10+30 s under chaos), sometimes
            # longer: the events in flight then end in the dead-letter queues
            down = rng.choice([rng.uniform(1, 10), rng.uniform(1, 10), rng.uniform(20, 40), rng.uniform(50, 70)])
            actions.append(_action(rng.uniform(seconds * 0.15, seconds * 0.7), "pg", "postgresql",
                                   mode=rng.choice(["fast", "immediate"]), down=round(down, 1)))
    # --- vendor faults: back-to-back episodes per simulator, with gaps ------------------------------
    if faults:
        for sim in SIMULATORS:
            kinds = [k for k in FAULT_KINDS if k != "drop_after_write" or sim in _WRITES]
            # a dropped answer after the write is what exactly-once is about: the most frequent
            weights = [{"drop_after_write": 4, "429": 3}.get(k, 2) for k in kinds]
            at = rng.uniform(0, 8)
            while at < seconds * 0.85:
                kind = rng.choices(kinds, weights)[0]
                duration = round(rng.uniform(6, 20), 1)
                actions.append(_action(at, "fault", sim, label=kind, duration=duration,
                                       rule=_Frozen(fault_rule(rng, sim, kind))))
                at += duration + rng.uniform(2, 10)
    return sorted(actions, key=lambda a: (a.at, a.kind, a.target))


class _Frozen(dict):
    """A dict usable in a frozen dataclass's params (hashable by content)."""

    def __hash__(self):
        return hash(tuple(sorted((k, str(v)) for k, v in self.items())))


def summary(actions):
    counts = {}
    for a in actions:
        key = a.kind if a.kind != "fault" else f"fault:{a.p['label']}"
        counts[key] = counts.get(key, 0) + 1
    return counts
