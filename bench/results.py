"""Results of a benchmark run: a JSON record and a Markdown table in bench/results/, with the
commit and the machine, and the README's table of the latest figures."""
import datetime as dt
import json
import math
import os
import platform
import subprocess

from common.secrets import ROOT

RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values):
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else None}


def commit():
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    sha = git("rev-parse", "--short=12", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return sha + ("+dirty" if dirty else "")


def machine():
    mem_kib = 0
    cpu = platform.processor()
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1), "cpu": cpu,
            "python": platform.python_version(), "kernel": platform.release()}


def write(bench, figures, rows, headers, notes=()):
    """Save one run: bench/results/<bench>-<utc stamp>.{json,md} and <bench>-latest.{json,md}.

    ``figures`` is the machine-readable result; ``rows``/``headers`` the table a person reads;
    ``notes`` say what limits the figure. Returns the Markdown text.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    record = {"bench": bench, "at": now.isoformat(), "commit": commit(), "machine": machine(),
              "figures": figures, "notes": list(notes)}
    md = markdown(record, rows, headers)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for name in (f"{bench}-{stamp}", f"{bench}-latest"):
        (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        (RESULTS / f"{name}.md").write_text(md)
    update_readme()
    return md


def carry_over(bench, runs, key):
    """``runs`` plus the runs of the previous <bench>-latest.json whose ``key`` this run did not
    measure, each marked ``carried_from`` (commit, time, file): a partial re-run (one setting, one
    scenario) keeps the table whole and says which rows are older. Returns (runs, sources)."""
    path = RESULTS / f"{bench}-latest.json"
    if not path.exists():
        return runs, []
    prev = json.loads(path.read_text())
    stamp = dt.datetime.fromisoformat(prev["at"]).strftime("%Y%m%dT%H%M%SZ")
    source = {"commit": prev["commit"], "at": prev["at"], "file": f"bench/results/{bench}-{stamp}.md"}
    have = {key(r) for r in runs}
    old = [{**r, "carried_from": r.get("carried_from", source)}
           for r in prev["figures"].get("runs", []) if key(r) not in have]
    sources = {o["carried_from"]["file"]: o["carried_from"] for o in old}
    return runs + old, list(sources.values())


def carried_label(run):
    c = run.get("carried_from")
    return f" (carried: {c['commit'][:7]}, {c['at'][:16].replace('T', ' ')})" if c else ""


def carried_notes(sources):
    return [f"rows marked 'carried' are from an earlier run (commit {s['commit']}, {s['at']}); its notes: "
            f"{s['file']}" for s in sources]


def markdown(record, rows, headers):
    m = record["machine"]
    lines = [f"### {record['bench']}", "",
             f"{record['at']} - commit `{record['commit']}` - {m['cores']} cores, {m['memory_gib']} GiB, "
             f"{m['cpu']}, Python {m['python']}", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    if record["notes"]:
        lines.append("")
        lines += [f"- {n}" for n in record["notes"]]
    return "\n".join(lines) + "\n"


def _cell(value):
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


ORDER = ["pipeline", "economy", "scaleout", "gateway", "chaos"]


def update_readme():
    """Replace the README's block between the bench markers with every <bench>-latest.md."""
    if not README.exists():
        return
    text = README.read_text()
    if BEGIN not in text or END not in text:
        return
    names = sorted((p.stem[:-len("-latest")] for p in RESULTS.glob("*-latest.md")),
                   key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    body = "\n".join((RESULTS / f"{n}-latest.md").read_text().replace("### ", "#### ", 1) for n in names)
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{body or '(no run yet: `make bench`)'}\n{END}{tail}")
