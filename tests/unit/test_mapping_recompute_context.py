"""recompute.Context.lines_for: the lines a contract line's plan sees, from an index built once per
context, the same lines in the same order as the scan over every line it replaced."""
import random

from services.mapping import planner
from services.mapping.domain import MAPPED, LineMapping
from services.mapping.recompute import Context


def scan(ctx, group):
    """The old definition: every loaded line, looked at once per contract line."""
    keys = set()
    for cp in (ctx.rows.get(group) or {}).get("timeline") or []:
        keys.update(planner.basis_dict(cp))
    return [li for key, li in ctx.lines.items()
            if key in keys or li.mapping.group_key == group or li.billed == group
            or (li.rebase is not None and li.rebase[0] == group)]


def a_tenant(seed):
    rng = random.Random(seed)
    groups = [(f"C{c}", f"S{s}") for c in range(6) for s in range(3)]
    ctx = Context("t1", "autotask", billing=None, plan_settings=None)
    keys = [(f"sub{n}", f"MPN-{n % 4}") for n in range(120)]
    rng.shuffle(keys)
    for key in keys:
        mapped = rng.random() < 0.8
        contract, service = rng.choice(groups) if mapped else (None, None)
        billed = rng.choice(groups) if rng.random() < 0.3 else None
        rebase = (rng.choice(groups), 2, None) if rng.random() < 0.1 else None
        ctx.lines[key] = planner.LineInput(key, [], LineMapping(MAPPED, MAPPED, MAPPED, "co", service, contract),
                                           billed=billed, rebase=rebase)
    for group in rng.sample(groups, 10):
        basis = [[*rng.choice(keys), 1] for _ in range(5)] + [["gone", "MPN-9", 1]]   # one line no longer loaded
        ctx.rows[group] = {"timeline": [{"basis": basis}, {"basis": []}]}
    return ctx, groups + [("C99", "S99")]


def test_lines_for_gives_the_lines_of_the_full_scan_in_load_order():
    for seed in range(20):
        ctx, groups = a_tenant(seed)
        for group in groups:
            assert [li.key for li in ctx.lines_for(group)] == [li.key for li in scan(ctx, group)], (seed, group)
    assert any(ctx.lines_for(g) for g in groups) and ctx.lines_for(("C99", "S99")) == []
