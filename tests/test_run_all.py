"""`make all`'s job runner (scripts/run_all.py): the pipeline's graph, and jobs run side by side
within the limit, after what they wait on, with a failure stopping the rest."""

import json
import sys
from pathlib import Path

import pytest

from core.data.__main__ import PrepareConfig
from scripts import run_all
from scripts.run_all import Job


def test_every_evaluation_waits_only_on_what_it_reads():
    graph = {job.name: job for job in run_all.jobs(Path("r"), force=False, python="py")}
    after = {name: set(job.after) for name, job in graph.items()}
    assert after["data"] == after["data_pretrain"] == {"check"}
    # the two data jobs generate every split once between them, the pretraining one alone first
    splits = [
        graph[n].argv[-1].removeprefix("splits=[").rstrip("]").split(",")
        for n in ("data", "data_pretrain")
    ]
    assert splits[1] == ["pretrain"] and not set(splits[0]) & set(splits[1])
    assert sorted(splits[0] + splits[1]) == sorted(PrepareConfig().splits)
    for name in ("pretrain_mast_and_target", "pretrain_vicreg"):
        assert after[name] == {"data_pretrain"}
    assert after["classification_references"] == {"data"}
    for name in ("detection_floor", "segmentation_floor"):
        assert after[name] == {"data"}
        assert "--floor" in graph[name].argv and "--ckpt" not in graph[name].argv
    for name in ("classification_mast_and_target", "detection_mast", "segmentation_mast"):
        assert after[name] == {"pretrain_mast_and_target", "data"}
        ckpt = graph[name].argv[graph[name].argv.index("--ckpt") + 1]
        assert ckpt == "r/runs/mast_and_target_r18w16_b128_16e_shapes_s0/last.pt"
    assert after["classification_vicreg"] == {"pretrain_vicreg", "data"}
    assert after["analysis"] == set(graph) - {"analysis"}
    run_all.check_graph(list(graph.values()))
    # the longest chain goes first: MAST's pretraining and its evaluations
    chains = run_all.chain_costs(list(graph.values()))
    ready = ["pretrain_mast_and_target", "pretrain_vicreg", "detection_floor"]
    assert max(ready, key=chains.get) == "pretrain_mast_and_target"


def test_classification_jobs_that_may_run_together_have_their_own_folders():
    # a classification run locks its --out: two jobs on one folder failed a make all when MAST's
    # probes and VICReg's overlapped
    graph = run_all.jobs(Path("r"), force=False, python="py")
    outs = {
        job.name: job.argv[job.argv.index("--out") + 1]
        for job in graph
        if "downstream.classification" in job.argv
    }
    assert len(outs) == 3 and len(set(outs.values())) == 3
    assert outs["classification_vicreg"] == "r/runs/classification/vicreg"


def test_force_reaches_every_stage_that_skips_finished_work():
    graph = {job.name: job for job in run_all.jobs(Path("r"), force=True, python="py")}
    for name in ("data", "pretrain_vicreg", "detection_mast", "segmentation_floor"):
        assert "--force" in graph[name].argv
    assert "--auto-resume" not in graph["pretrain_vicreg"].argv


def _job(name, trace, seconds=0.3, after=(), code=0):
    """A job that writes its start and end times to ``trace`` and exits with ``code``."""
    script = (
        f"import json, sys, time; t = time.time(); time.sleep({seconds!r}); "
        f"open({str(trace)!r}, 'a').write(json.dumps([{name!r}, t, time.time()]) + '\\n'); "
        f"print('line one'); print('the last line'); sys.exit({code})"
    )
    return Job(name, f"job {name}", [sys.executable, "-c", script], tuple(after))


def _spans(trace):
    return {n: (t0, t1) for n, t0, t1 in map(json.loads, trace.read_text().splitlines())}


def _overlap(a, b):
    return min(a[1], b[1]) - max(a[0], b[0]) > 0


def test_jobs_run_side_by_side_within_the_limit_and_after_what_they_wait_on(tmp_path):
    trace = tmp_path / "trace.jsonl"
    graph = [
        _job("a", trace),
        _job("b", trace, after=["a"]),
        _job("c", trace, after=["a"]),
        _job("d", trace, after=["a"]),
        _job("e", trace, after=["b", "c", "d"]),
    ]
    lines = []
    assert run_all.run(graph, tmp_path, max_jobs=2, log=lines.append) == 0
    spans = _spans(trace)
    for job in graph:
        for dep in job.after:
            assert spans[dep][1] <= spans[job.name][0]
    middle = [spans[n] for n in "bcd"]
    pairs = [(x, y) for i, x in enumerate(middle) for y in middle[i + 1 :]]
    assert any(_overlap(x, y) for x, y in pairs)  # two at once ...
    assert not (_overlap(*pairs[0]) and _overlap(*pairs[1]) and _overlap(*pairs[2]))  # never three
    log = [
        json.loads(line) for line in (tmp_path / "runs" / "make_all.jsonl").read_text().splitlines()
    ]
    assert [e["job"] for e in log[:-1]][0] == "a" and len(log) == 6
    assert log[-1]["kind"] == "total" and log[-1]["seconds"] >= 0.9  # a, two of b-d, then e
    assert sum(e["seconds"] for e in log[:-1]) > log[-1]["seconds"]  # overlap
    assert (tmp_path / "runs" / "make_all" / "e.log").read_text().endswith("the last line\n")
    assert any("start: job b" in line for line in lines)


def test_one_job_at_a_time_never_overlaps(tmp_path):
    trace = tmp_path / "trace.jsonl"
    graph = [_job(name, trace, seconds=0.1) for name in "abc"]
    assert run_all.run(graph, tmp_path, max_jobs=1, log=lambda line: None) == 0
    spans = sorted(_spans(trace).values())
    assert all(x[1] <= y[0] for x, y in zip(spans, spans[1:]))


def test_a_failed_job_stops_the_rest_and_shows_its_log(tmp_path):
    trace = tmp_path / "trace.jsonl"
    graph = [
        _job("bad", trace, seconds=0.1, code=3),
        _job("slow", trace, seconds=30),
        _job("later", trace, after=["bad"]),
    ]
    lines = []
    assert run_all.run(graph, tmp_path, max_jobs=2, log=lines.append) == 1
    text = "\n".join(lines)
    assert "job bad failed (exit 3)" in text and "the last line" in text
    assert "stopped: bad failed" in text
    assert set(_spans(trace)) == {"bad"}  # `slow` was stopped, `later` never started
    timings = tmp_path / "runs" / "make_all.jsonl"
    assert not timings.is_file() or '"kind": "total"' not in timings.read_text()


def test_jobs_side_by_side_let_idle_openmp_threads_sleep(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    show = [sys.executable, "-c", "import os; print(os.environ.get('OMP_WAIT_POLICY'))"]
    for jobs, expected in ((2, "PASSIVE"), (1, "None")):
        out = tmp_path / str(jobs)
        assert run_all.run([Job("env", "env", show)], out, max_jobs=jobs, log=lambda x: None) == 0
        assert (out / "runs" / "make_all" / "env.log").read_text().strip() == expected
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stands
    assert run_all.job_env(2)["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_graph_out_of_order_is_refused():
    with pytest.raises(ValueError, match="waits on"):
        run_all.check_graph([Job("b", "b", ["true"], ("a",)), Job("a", "a", ["true"])])


def test_dry_run_lists_the_commands(capsys):
    assert run_all.main(["--dry-run", "--results", "/tmp/nowhere"]) == 0
    out = capsys.readouterr().out
    assert "segmentation_floor" in out and "--protocol embedded-mrcnn --floor" in out
    with pytest.raises(SystemExit):
        run_all.main(["--jobs", "0"])
