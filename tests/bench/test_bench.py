"""`make bench`'s sections run and write their files (quick mode: tiny sizes). Benchmarks are not
tests: nothing here asserts a time, only that every figure is there, positive and finite."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from bench import gpu, pretrain, stages
from bench.__main__ import SECTIONS, main, write_readme
from bench.machine import describe_machine
from bench.timing import Options


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A FactorShapes cache of its own: the quick sizes render a few images on first use."""
    return str(tmp_path_factory.mktemp("shapes"))


def read(out, name):
    record = json.loads((out / f"{name}.json").read_text())
    assert record["benchmark"] == name and record["quick"] is True
    assert {"time", "machine", "section_s"} <= set(record) and "error" not in record
    assert record["machine"]["cores"] >= 1
    return record


def make_log(path):
    lines = [
        {"stage": "data", "seconds": 40, "time": "t1"},
        {"stage": "pretrain mast", "seconds": 300, "time": "t2"},
        {"stage": "data", "seconds": 2, "time": "t3"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    return path


def test_cheap_sections_write_their_files_and_the_readme(tmp_path, data_root):
    out = tmp_path / "bench"
    log = make_log(tmp_path / "make_all.jsonl")
    assert (
        main(
            [
                "--quick",
                "--only",
                "loss_scaling",
                "data",
                "stages",
                "gpu",
                "--out",
                str(out),
                "--data-root",
                data_root,
                "--make-log",
                str(log),
            ]
        )
        == 0
    )

    loss = read(out, "loss_scaling")
    assert [row["d"] for row in loss["by_d"]] == [64, 128]
    assert [row["k"] for row in loss["by_k"]["rows"]] == [1, 2]
    for row in loss["by_d"]:
        assert set(row["ms"]) == {"vicreg", "mast_pair", "mast_factorized"}
        assert all(positive(v) for v in [*row["ms"].values(), *row["vs_vicreg"].values()])
    assert all(positive(v) for row in loss["by_k"]["rows"] for v in row["ms"].values())

    data = read(out, "data")
    assert [row["size"] for row in data["by_size"]] == [64, 224]
    for row in data["by_size"]:
        assert set(row["pipelines"]) == {"recording", "v2", "pil"}
        assert all(positive(p["views_per_s"]) for p in row["pipelines"].values())
        assert math.isfinite(row["recording_cost"]) and positive(row["recording_vs_pil"])
        assert positive(row["sampling_share"])
    # on the CPU the loader and the device path render the same pixels
    assert set(data["render_parity"]) == {"pair", "factorized"}
    for rows in data["render_parity"].values():
        cpu = next(row for row in rows if row["device"] == "cpu")
        assert cpu["views"] > 0 and cpu["max_abs"] == 0 and cpu["within_tolerance"]
        # the accelerator's crops (float products) against the CPU's uint8 resize: close, not equal
        batched = next(row for row in rows if row["device"] == "cpu, batched crops")
        assert batched["views"] == cpu["views"] and batched["within_tolerance"]
        assert 0 < batched["differing_share"] < 0.5 and batched["max_abs"] > 0

    timed = read(out, "stages")
    rows = [(s["stage"], s["seconds"], s["runs"]) for s in timed["stages"]]
    assert rows == [("data", 2, 2), ("pretrain mast", 300, 1)]
    assert timed["total_s"] == 302

    if not torch.cuda.is_available():
        assert read(out, "gpu")["skipped"] == "no CUDA device"
    readme = (out / "README.md").read_text()
    for name in ("loss_scaling", "data", "stages", "gpu"):
        assert f"## {SECTIONS[name].TITLE}" in readme
    assert "pretrain mast" in readme and "Quick mode" in readme
    assert "Render parity" in readme and "| pair | cpu | 32 x 64 px | 0.000 |" in readme


def test_stages_side_by_side_report_the_run_s_wall_total(tmp_path):
    """Jobs overlap, so the total is the last run's own wall time, not the sum of its stages."""
    lines = [
        {"stage": "data", "seconds": 40, "started_s": 5, "time": "t1"},
        {"stage": "total", "kind": "total", "seconds": 999, "time": "t2"},  # an earlier run
        {"stage": "pretrain mast", "seconds": 300, "started_s": 45, "time": "t3"},
        {"stage": "pretrain vicreg", "seconds": 280, "started_s": 45, "time": "t4"},
        {"stage": "total", "kind": "total", "seconds": 350, "time": "t5"},
    ]
    log = tmp_path / "make_all.jsonl"
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = stages.run(Options(make_log=log))
    assert [s["stage"] for s in result["stages"]] == ["data", "pretrain mast", "pretrain vicreg"]
    assert result["total_s"] == 350 and result["stage_sum_s"] == 620
    text = stages.markdown(result)
    assert "| pretrain vicreg | 0.8 | 280 | 4.7 | t4 | 1 |" in text
    assert "| **total (wall)** | | 350 | 5.8 | | |" in text and "add up to 10.3 min" in text


def test_stages_without_a_log_say_so(tmp_path):
    result = stages.run(Options(make_log=tmp_path / "missing.jsonl"))
    assert "no make all log yet" in result["skipped"]
    assert "no make all log yet" in stages.markdown(result)


def test_a_skipped_section_keeps_figures_measured_before(tmp_path):
    """The GPU section run on a CPU machine must not wipe the figures a GPU machine wrote."""
    log = tmp_path / "missing.jsonl"
    measured = {
        "benchmark": "stages",
        "time": "earlier",
        "machine": describe_machine(),
        "quick": False,
        "section_s": 1.0,
        "log": "make_all.jsonl",
        "total_s": 40,
        "stages": [{"stage": "data", "seconds": 40, "runs": 1, "time": "t1"}],
    }
    (tmp_path / "stages.json").write_text(json.dumps(measured))
    assert main(["--only", "stages", "--out", str(tmp_path), "--make-log", str(log)]) == 0
    assert (tmp_path / "stages.json").read_text() == json.dumps(measured)
    assert "| data | | 40 | 0.7 | t1 | 1 |" in (tmp_path / "README.md").read_text()

    skipped_before = {**measured, "stages": None, "skipped": "no make all log yet"}
    (tmp_path / "stages.json").write_text(json.dumps(skipped_before))
    assert main(["--only", "stages", "--out", str(tmp_path), "--make-log", str(log)]) == 0
    assert json.loads((tmp_path / "stages.json").read_text())["time"] != "earlier"


def test_readme_marks_failed_and_outdated_section_files(tmp_path):
    machine = describe_machine()
    (tmp_path / "pretrain.json").write_text(
        json.dumps({"benchmark": "pretrain", "machine": machine, "error": "RuntimeError: boom"})
    )
    (tmp_path / "data.json").write_text(
        json.dumps({"benchmark": "data", "machine": machine, "methods": {}})
    )
    readme = write_readme(tmp_path)
    assert "failed: RuntimeError: boom" in readme
    assert "older layout" in readme and "--only data" in readme


class _CutOffSection:
    """A section that reports its first figure, then stops as ``how`` says."""

    TITLE = "Cut"

    def __init__(self, how):
        self.how = how

    def run(self, opts):
        opts.save({"rows": [1.5]})
        if self.how == "killed":  # what a time limit's SIGTERM looks like to Python
            raise KeyboardInterrupt
        if self.how == "failed":
            raise RuntimeError("boom")
        return {"rows": [1.5, 2.5]}

    @staticmethod
    def markdown(record):
        return "rows: " + ", ".join(map(str, record["rows"]))


@pytest.mark.parametrize("how", ["killed", "failed", "finished"])
def test_a_section_cut_off_keeps_the_figures_it_reported(tmp_path, monkeypatch, how):
    """The GPU section runs under a device call's time limit: what it measured before a kill or an
    error stays in <section>.json.partial and shows in the README; a finished run removes it."""
    monkeypatch.setitem(SECTIONS, "cut", _CutOffSection(how))
    earlier = {"benchmark": "cut", "machine": describe_machine(), "rows": [9.0], "time": "t0"}
    (tmp_path / "cut.json").write_text(json.dumps(earlier))
    partial = tmp_path / "cut.json.partial"
    if how == "killed":
        with pytest.raises(KeyboardInterrupt):
            main(["--only", "cut", "--out", str(tmp_path)])
        assert (tmp_path / "cut.json").read_text() == json.dumps(earlier)  # nothing lost
        assert main(["--readme-only", "--out", str(tmp_path)]) == 0
    else:
        assert main(["--only", "cut", "--out", str(tmp_path)]) == (1 if how == "failed" else 0)
    readme = (tmp_path / "README.md").read_text()
    with pytest.raises(SystemExit):  # argparse's one-line error, exit status 2
        main(["--readme-only", "--out", str(tmp_path / "missing")])
    if how == "finished":
        assert not partial.exists() and "cut off" not in readme
        assert "rows: 1.5, 2.5" in readme and "rows: 9.0" not in readme
        return
    kept = json.loads(partial.read_text())
    assert kept["partial"] is True and kept["rows"] == [1.5] and kept["section_s"] >= 0
    assert "## Cut (cut off)" in readme and "rows: 1.5" in readme
    assert ("rows: 9.0" in readme) == (how == "killed")
    assert ("failed: RuntimeError: boom" in readme) == (how == "failed")


def test_gpu_markdown_of_a_run_cut_off_shows_the_parts_before_the_cut():
    row = {"batch_size": 256, "step_s": 0.5, "img_per_s": 512.0, "step_time_vs_vicreg": 1.0}
    row |= {"peak_memory_mb": 1.0, "achieved_tflops": 1.0, "mfu": 0.4}
    e2e = {"target": {"metric": "mfu", "value": 0.35}, "runs": {}}
    result = {
        "device": "NVIDIA H200",
        "peak_bf16_tflops": 989.0,
        "repeats": 5,
        "settings": {
            "embedded": {"steps_per_repeat": 10, "modes": {"fp32": {"vicreg": row}}},
            "resnet50_224": {"steps_per_repeat": 3, "modes": {}, "end_to_end": e2e},
            "later": {},
        },
    }
    text = gpu.markdown(result)
    assert "| fp32 | vicreg | 0.5000 | 512 | 1.000 | 1 | 1.00 | 40.0% |" in text
    assert "Data loader" not in text and "MFU >= 35%" in text
    assert "**later**: not measured (cut off before it)" in text


def test_a_run_that_misses_its_bar_profiles_the_default_mast_step(data_root):
    """The end-to-end bar is on the default MAST config (AND + subspace targets), not on mast
    (pair): its miss records where that config's step spends more than vicreg's."""
    opts = Options(quick=True, data_root=data_root)
    overrides = [*pretrain.settings(opts)["embedded"]["overrides"], f"data.root={data_root}"]
    specs = {name: (config, overrides) for name, config in pretrain.RUNS.items()}
    profile = pretrain.profile_pair(specs, "mast")
    assert set(profile) == {"vicreg", "mast", "extra_in_mast", "total_self_ms"}
    assert all(positive(v) for v in profile["total_self_ms"].values())
    extra = [row["extra_ms"] for row in profile["extra_in_mast"]]
    assert extra == sorted(extra, reverse=True) and len(extra) == 8
    assert all(row["calls"] >= 1 for row in profile["extra_in_mast"])
    runs = {
        "configs": pretrain.RUNS,
        "steps": 2,
        "repeats": 1,
        "wall_s": {name: {"median_s": 1.0} for name in pretrain.RUNS},
        "mast_vs_vicreg": 1.2,
        "within_target": False,
        "profile": profile,
    }
    text = "\n".join(pretrain._runs_lines(runs, 1.05))
    assert "(within 1.05: **no** (profile below))" in text
    assert "- where the MAST run's step spends more than vicreg's (one step's self time:" in text


def test_memory_probe_of_one_method(data_root):
    opts = Options(quick=True, data_root=data_root)
    config, overrides = pretrain.variants(pretrain.settings(opts)["embedded"], opts)["vicreg"]
    memory = pretrain.memory_of(config, overrides)
    assert memory["kind"] == "cpu_rss" and positive(memory["peak_mb"])
    assert memory["step_mb"] is None or memory["step_mb"] >= 0


def test_peak_table_matches_device_names():
    assert gpu.peak_tflops("NVIDIA H200") == 989.0
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_tflops("NVIDIA A10") == 125.0
    assert gpu.peak_tflops("Some Future GPU") is None and gpu.peak_tflops(None) is None


@pytest.mark.slow
def test_pretrain_section(tmp_path, data_root):
    out = tmp_path / "bench"
    assert main(["--quick", "--only", "pretrain", "--out", str(out), "--data-root", data_root]) == 0
    result = read(out, "pretrain")
    assert set(result["settings"]) == {"embedded", "resnet50_224"}
    for name, entry in result["settings"].items():
        rows = entry["methods"]
        # the make all config, with separate heads, and the default before (separate, 128 wide)
        default = set(pretrain.DEFAULTS) if name == "embedded" else set()
        assert set(rows) == {"vicreg", "mast_pair", "mast_factorized", *default}
        assert rows["vicreg"]["step_time_vs_vicreg"] == 1.0
        assert rows["mast_factorized"]["views"] == 7
        for row in rows.values():
            figures = ("step_s", "img_per_s", "step_time_vs_vicreg", "peak_memory_vs_vicreg")
            assert all(positive(row[k]) for k in figures)
            assert positive(row["memory"]["peak_mb"])
        assert isinstance(entry["mast_pair_within_target"], bool)
    runs = result["settings"]["embedded"]["runs"]
    assert runs["steps"] == 2 and set(runs["wall_s"]) == {"vicreg", "mast"}
    walls = {name: runs["wall_s"][name]["samples_s"] for name in runs["wall_s"]}
    assert runs["repeats"] == 2 and all(
        len(v) == 2 and all(map(positive, v)) for v in walls.values()
    )
    # the median of the two repeats' own ratios (each MAST run against the VICReg run beside it)
    ratios = [m / v for m, v in zip(walls["mast"], walls["vicreg"])]
    assert runs["mast_vs_vicreg"] == pytest.approx(sum(ratios) / 2)
    assert runs["within_target"] == (runs["mast_vs_vicreg"] <= 1.05)
    assert ("profile" in runs) == (not runs["within_target"])
    assert "MAST run / VICReg run wall time" in (out / "README.md").read_text()
    assert "resnet50_224" not in {k for k, v in result["settings"].items() if "runs" in v}


@pytest.mark.slow
def test_downstream_section(tmp_path, data_root):
    out = tmp_path / "bench"
    assert (
        main(["--quick", "--only", "downstream", "--out", str(out), "--data-root", data_root]) == 0
    )
    result = read(out, "downstream")
    assert positive(result["extraction"]["img_per_s"]) and positive(result["extract_all_parts_s"])
    probes = result["linear_probe"]["tasks"]
    assert len(probes) == 9 and all(positive(row["median_s"]) for row in probes)
    detection = result["detection"]
    assert detection["timed_iters"] == 2 and positive(detection["iter_s"])


@pytest.mark.slow
def test_gpu_figures_run_on_the_cpu(data_root):
    """The GPU section's code on the CPU (no bf16 there, no peak, no CUDA memory): every figure
    present."""
    saved = []
    opts = Options(
        quick=True, data_root=data_root, checkpoint=lambda r: saved.append(json.dumps(r))
    )
    result = gpu.measure(opts, "cpu")
    assert result["peak_bf16_tflops"] is None
    # after each mode, the loader sweep and each end-to-end run, and each setting's end
    assert len(saved) >= 2 * (len(gpu.MODES) + 1 + 2) and json.loads(saved[-1]) == result
    assert "loader" not in json.loads(saved[0])["settings"]["embedded"]
    # the embedded setting also times the MAST config `make all` trains; ResNet-50 has none
    methods = {
        "embedded": {"vicreg", "mast_pair", "mast_factorized", "mast_default"},
        "resnet50_224": {"vicreg", "mast_pair", "mast_factorized"},
    }
    runs = {"embedded": {"vicreg", "mast", "mast_default"}, "resnet50_224": {"vicreg", "mast"}}
    for name, entry in result["settings"].items():
        assert set(entry["modes"]) == set(gpu.MODES)
        assert all(set(rows) == methods[name] for rows in entry["modes"].values())
        for rows in entry["modes"].values():
            assert all(
                positive(row["step_s"]) and positive(row["step_gflop"]) for row in rows.values()
            )
        rows = entry["loader"]["settings"]
        assert len(rows) == len(gpu.RENDERS) * len(gpu.loader_grid(True))
        assert [row["render"] for row in rows[:: len(gpu.loader_grid(True))]] == list(gpu.RENDERS)
        assert all(positive(row["img_per_s"]) for row in rows)
        assert set(entry["loader"]["fewest_workers_that_keep_up"]) == set(gpu.RENDERS)
        e2e = entry["end_to_end"]
        # compiled runs only on CUDA
        assert set(e2e["runs"]) == runs[name]
        for run in e2e["runs"].values():
            assert run["steps"] == 2 and not run["compile"]
            assert positive(run["img_per_s"]) and run["mfu"] is None  # no peak on a CPU
            assert run["img_per_s"] == pytest.approx(run["batch_size"] / run["step_s"])
            assert 0 <= run["waiting_share"] < 1
            metric, bar = e2e["target"]["metric"], e2e["target"]["value"]
            expected = None if metric == "mfu" else run["img_per_s"] >= bar
            assert run["meets_target"] is expected
    text = gpu.markdown(result)
    assert "views rendered by the loader" in text and "views rendered by the device" in text
    assert "End to end" in text and "at least 20,000 img/s" in text and "MFU >= 35%" in text


@pytest.mark.slow
def test_memory_format_section(tmp_path, data_root):
    out = tmp_path / "bench"
    assert (
        main(["--quick", "--only", "memory_format", "--out", str(out), "--data-root", data_root])
        == 0
    )
    result = read(out, "memory_format")
    assert set(result["kernels"]) == {"native", "avx2"}
    for row in result["kernels"].values():
        assert all(positive(v) for v in row["step_s"].values()) and positive(
            row["channels_last_vs_contiguous"]
        )
    assert result["kernels"]["avx2"]["chosen"]["memory_format"] == "contiguous"


def test_gpu_section_survives_a_vicreg_step_out_of_memory(monkeypatch):
    """The loader and end-to-end figures hang on the bf16 VICReg step: when it ran out of memory
    the setting says so and the rest of the section still renders."""
    row = {"batch_size": 256, "step_s": 0.5, "img_per_s": 512.0, "step_time_vs_vicreg": None}
    row |= {"peak_memory_mb": 1.0, "achieved_tflops": 1.0, "mfu": None}
    monkeypatch.setattr(
        gpu,
        "measure_mode",
        lambda *a, **k: {"vicreg": {"error": "out of memory: x"}, "mast_pair": dict(row)},
    )
    monkeypatch.setattr(gpu, "loader_sweep", lambda *a, **k: pytest.fail("no sweep without vicreg"))
    setting = gpu.settings(Options(quick=True))["resnet50_224"]
    entry = gpu.measure_setting(setting, Options(quick=True), torch.device("cpu"), 1, None)
    assert "bf16 vicreg step failed" in entry["error"] and "loader" not in entry
    text = gpu.markdown(
        {"device": "x", "peak_bf16_tflops": None, "repeats": 1, "settings": {"r": entry}}
    )
    assert "**r** (batch 256)" in text and "out of memory: x" in text and "n/a" in text


def test_a_method_that_runs_out_of_memory_keeps_the_first_line_of_its_error(monkeypatch):
    """Seven views of ResNet-50 at batch 256 may not fit a smaller GPU: each method that did not
    fit gets a row holding the error's first line instead of an exception that ends the section."""

    def build(config, extra, out):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\ndetails")

    monkeypatch.setattr(gpu, "build", build)
    specs = {"vicreg": ("a.yaml", []), "mast_pair": ("b.yaml", [])}
    rows = gpu.measure_mode(specs, 1, 1, None, torch.device("cpu"))
    expected = {"error": "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert rows == {"vicreg": expected, "mast_pair": expected}


def test_gpu_check_skips_the_steps_its_budget_has_no_time_for(tmp_path):
    """scripts/gpu_check.sh must end inside one device call: a step with under 20 s of BUDGET left
    is not started, and says so in status.txt, in the order the steps would have run."""
    out = tmp_path / "out"
    env = os.environ | {"BUDGET": "1", "DEVICE": "cpu", "SMOKE": "1", "PYTHON": sys.executable}
    env["WORK"] = str(tmp_path / "work")
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(out)],
        cwd=gpu.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = (out / "status.txt").read_text().splitlines()
    names = [line.split()[0] for line in lines]
    assert names == [
        "render_parity",
        "lars_foreach",
        "nvjpeg_parity",
        "compile_parity",
        "pretrain_vicreg",
        "pretrain_mast",
        "pretrain_render_device",
        "resume_first",
        "resume_second",
        "classification",
    ]
    assert all("skipped" in line and "of BUDGET=1 left" in line for line in lines)
    assert torch.__version__ in (out / "machine.txt").read_text()
