"""Training curves from hand-written logs: parsing, tolerance to missing keys, PNG and JSON
outputs."""

import argparse
import json
import math

import numpy as np
import pytest

from analysis import curves
from analysis.curves import AnalysisInputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_log(folder, rows, tail=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return folder


def _mast_rows():
    rows = [
        {
            "step": s,
            "epoch": (s - 1) // 2,
            "loss": 10.0 - s,
            "inv": 0.1,
            "var": 0.5,
            "cov": 0.2,
            "density": 1e-7,
            "unc_fit": -0.1 * s,
            "embedding_loss": 12.0 - s,
            "img_per_s": 100.0 * s,
            "uncertainty": {"crop": 1.0},
        }
        for s in range(1, 5)
    ]
    rows.insert(2, {"event": "epoch_end", "epoch": 1, "step": 2})
    return rows


def _args(paths, out, *extra):
    parser = argparse.ArgumentParser()
    curves.add_arguments(parser)
    return parser.parse_args([*map(str, paths), "--out", str(out), *extra])


def test_per_run_figures_are_pngs_and_summary_has_last_values(tmp_path):
    # cut-off last line
    run_dir = _write_log(tmp_path / "mast_run", _mast_rows(), tail='{"step": 5, "lo')
    written = curves.run(_args([run_dir], tmp_path / "out", "--smooth", "2"))
    assert {p.name for p in written} == {"loss_terms.png", "throughput.png", "curves.json"}
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((tmp_path / "out" / "mast_run" / "curves.json").read_text())["mast_run"]
    assert (
        summary["steps_logged"] == 4
        and summary["last"]["loss"] == 6.0
        and summary["last"]["unc_fit"] == -0.4
    )
    assert summary["median_img_per_s"] == 250.0


def test_overlay_tolerates_a_vicreg_log_without_mast_keys(tmp_path):
    mast = _write_log(tmp_path / "mast", _mast_rows())
    vicreg = _write_log(
        tmp_path / "vicreg",
        [{"step": s, "loss": 20.0, "inv": 0.1, "var": 0.6, "cov": 0.3} for s in (1, 2)],
    )
    written = curves.run(_args([mast, vicreg / "log.jsonl"], tmp_path / "out", "--overlay"))
    assert all(p.parent.name == "overlay" for p in written)
    summary = json.loads((tmp_path / "out" / "overlay" / "curves.json").read_text())
    assert set(summary) == {"mast", "vicreg"} and "unc_fit" not in summary["vicreg"]["last"]
    assert summary["vicreg"]["median_img_per_s"] is None


def test_read_log_skips_events_and_reads_nan_strings(tmp_path):
    rows = [
        {"step": 2, "loss": "nan"},
        {"event": "epoch_end", "epoch": 1, "step": 2},
        {"step": 1, "loss": 3.0},
    ]
    steps = curves.step_rows(curves.read_log(_write_log(tmp_path / "r", rows)))
    assert [r["step"] for r in steps] == [1, 2] and math.isnan(steps[1]["loss"])


def test_present_terms_and_smoothing():
    runs = {"a": [{"step": 1, "loss": 1.0, "cov": 2.0}], "b": [{"step": 1, "inv": 1.0}]}
    assert curves.present_terms(runs) == ["loss", "inv", "cov"]
    assert curves.smooth(np.array([1.0, 3.0, 5.0, math.nan]), 2).tolist() == [1.0, 2.0, 4.0, 5.0]


def test_bad_inputs_are_one_line_errors_naming_the_path(tmp_path):
    with pytest.raises(AnalysisInputError, match="missing_run: not found"):
        curves.run(_args([tmp_path / "missing_run"], tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalysisInputError, match="empty: no log.jsonl"):
        curves.run(_args([tmp_path / "empty"], tmp_path / "out"))
    bad = _write_log(tmp_path / "bad", [], tail='not json\n{"step": 1, "loss": 1.0}\n')
    with pytest.raises(AnalysisInputError, match=r"log.jsonl:1 is not a JSON object"):
        curves.run(_args([bad], tmp_path / "out"))


def test_run_label_names_runs_and_epoch_checkpoints(tmp_path):
    run_dir = _write_log(tmp_path / "mast_a", [{"step": 1, "loss": 1.0}])
    (run_dir / "last.pt").write_bytes(b"")
    assert curves.run_label(run_dir) == "mast_a"
    assert curves.run_label(run_dir / "last.pt") == "mast_a"
    assert curves.run_label(run_dir / "epoch_8.pt") == "mast_a@epoch_8"
    assert curves.run_label(tmp_path / "lone.pt") == "lone"
    assert curves.unique_label("mast_a", {"mast_a", "mast_a-2"}) == "mast_a-3"
