"""The README's timing table comes from the suite's own logs, and the README holds what they say."""

import json
from pathlib import Path

from analysis import report
from analysis.timings import timing_lines

ROOT = Path(__file__).resolve().parents[2]


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    (results / "bench").mkdir(parents=True)
    (results / "study").mkdir()
    stages = [{"stage": "pretrain mast", "seconds": 400.0}, {"stage": "analysis", "seconds": 33.0}]
    (results / "bench" / "stages.json").write_text(
        json.dumps({"time": "2026-11-30T17:03:32+0000", "total_s": 433.0, "stages": stages})
    )
    (results / "bench" / "data.json").write_text(json.dumps({"section_s": 90.0}))
    runs = {
        f"results/runs/{name}": {"resolved": {"train": {"epochs": e}, "views": {"mode": m}}}
        for name, e, m in [("a_s0", 16, "pair"), ("a_s1", 16, "pair"), ("f_s0", 16, "factorized")]
    }
    (results / "study" / "runs.json").write_text(json.dumps(runs))
    steps = [
        ("pretrain a_s0", 300.0, True),
        ("pretrain a_s1", 360.0, True),
        ("pretrain a_s1", 20.0, True),  # a resume: not a whole run
        ("pretrain f_s0", 1200.0, True),
        ("pretrain gone_s0", 500.0, True),  # no config in the ledger: left out
        ("classification a_s0", 30.0, True),
        ("detection embedded-frcnn a_s0", 250.0, True),
        ("detection embedded-frcnn a_s1", 7.0, True),  # records found: not a run
        ("segmentation embedded-mrcnn a_s0", 330.0, False),  # not run by the study
    ]
    (results / "study" / "times.jsonl").write_text(
        "".join(json.dumps({"step": s, "seconds": t, "ran": r}) + "\n" for s, t, r in steps)
        + "not json\n"
    )
    return results


def test_rows_from_the_logs(tmp_path):
    lines = timing_lines(_results(tmp_path))
    assert lines[:2] == ["| step | wall time | measured by |", "|---|---|---|"]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1] for line in lines[2:]}
    assert rows["**`make all` after set-up**"] == "**7.2 min**"
    assert rows["`make all`: pretrain mast"] == "6.7 min"
    assert (
        rows["pretraining, one pair-view run of 16 epochs"]
        == "5.5 min (median; 5.0 min to 6.0 min)"
    )
    assert rows["pretraining, one factorized-view run of 16 epochs"] == "20.0 min"
    assert rows["classification of one checkpoint (9 tasks, linear-lbfgs + knn)"] == "30 s"
    assert rows["detection, one embedded-frcnn run"] == "4.2 min"
    assert rows["`make bench` (all sections)"] == "90 s"
    assert not any("segmentation" in r for r in rows)


def test_nothing_measured_is_one_line(tmp_path):
    assert timing_lines(tmp_path) == [
        "No measured times yet (`make all`, `make study`, `make bench` write them)."
    ]


def test_update_readme_rewrites_the_timing_block_only(tmp_path):
    results = _results(tmp_path)
    readme = tmp_path / "README.md"
    text = f"# top\n{report.TIMINGS_BEGIN}\nold\n{report.TIMINGS_END}\nbottom\n"
    readme.write_text(text)
    assert report.update_readme(readme, results) == readme
    new = readme.read_text()
    assert new.startswith(f"# top\n{report.TIMINGS_BEGIN}\n\n| step |")
    assert new.endswith(f"\n\n{report.TIMINGS_END}\nbottom\n") and "old" not in new


def test_the_readme_shows_what_the_committed_logs_measured():
    """`make analysis` writes the table; a README edited by hand, or logs added without rerunning
    the analysis, fail here."""
    text = (ROOT / "README.md").read_text()
    block = text.split(report.TIMINGS_BEGIN)[1].split(report.TIMINGS_END)[0]
    assert block.strip().splitlines() == timing_lines(ROOT / "results")
