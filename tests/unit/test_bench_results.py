"""A partial bench re-run keeps the rows it did not repeat, marked as carried from the earlier run."""
import json

from bench import results


def test_a_partial_rerun_replaces_its_own_rows_and_carries_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    earlier = {"bench": "pipeline", "at": "2026-11-25T15:58:34+00:00", "commit": "d1f524533153",
               "figures": {"runs": [{"psa": "autotask", "kind": "burst", "lines": 1000, "lps": 25.7},
                                    {"psa": "autotask", "kind": "burst", "lines": 10000, "lps": 29.3},
                                    {"psa": "autotask", "kind": "paced", "lines": 660, "p95": 2.9}]}}
    (tmp_path / "pipeline-latest.json").write_text(json.dumps(earlier))
    new = [{"psa": "autotask", "kind": "burst", "lines": 1000, "lps": 26.0},
           {"psa": "autotask", "kind": "paced", "lines": 650, "p95": 1.9}]

    runs, sources = results.carry_over("pipeline", new, lambda r: (r["psa"], r["kind"],
                                                                   r["lines"] if r["kind"] == "burst" else None))

    assert [(r["kind"], r["lines"], r.get("lps") or r.get("p95")) for r in runs] == [
        ("burst", 1000, 26.0), ("paced", 650, 1.9), ("burst", 10000, 29.3)]
    assert "carried_from" not in runs[0] and "carried_from" not in runs[1]
    assert runs[2]["carried_from"] == {"commit": "d1f524533153", "at": "2026-11-25T15:58:34+00:00",
                                       "file": "bench/results/pipeline-20261125T155834Z.md"}
    assert sources == [runs[2]["carried_from"]]
    assert results.carried_label(runs[2]) == " (carried: d1f5245, 2026-11-25 15:58)"
    assert results.carried_label(runs[0]) == ""


def test_nothing_to_carry_without_an_earlier_run(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    assert results.carry_over("economy", [{"step": "steady"}], lambda f: f["step"]) == ([{"step": "steady"}], [])
