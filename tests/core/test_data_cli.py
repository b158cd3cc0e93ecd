"""`python -m core.data prepare|check`: outputs, saved config, errors."""

import json
import subprocess
import sys

import yaml

from core.data.__main__ import main


def test_prepare_writes_summary_and_config(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "prepare",
            "--out",
            str(out),
            "--set",
            f"root={tmp_path / 'cache'}",
            "splits=[pretrain, cls-rot]",
            "n=8",
            "workers=1",
        ]
    )
    assert code == 0
    rows = json.loads((out / "summary.json").read_text())
    assert [(r["split"], r["part"], r["n"]) for r in rows] == [
        ("pretrain", "train", 8),
        ("cls-rot", "train", 8),
        ("cls-rot", "val", 8),
        ("cls-rot", "test", 8),
    ]
    assert all(r["image_size"] == 64 for r in rows)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (
        saved["n"] == 8
        and saved["splits"] == ["pretrain", "cls-rot"]
        and saved["generator_seed"] == 0
    )
    run = json.loads((out / "run.json").read_text())
    assert run["stage"] == "data.prepare" and run["versions"]["torch"]
    assert run["machine"]["cpu"] and run["machine"]["torch_threads"] >= 1
    # Idempotent: a second run reuses the cache and --force regenerates identical data.
    first = (tmp_path / "cache").stat().st_mtime
    assert (
        main(
            [
                "prepare",
                "--out",
                str(out),
                "--set",
                f"root={tmp_path / 'cache'}",
                "splits=[pretrain]",
                "n=8",
                "workers=1",
                "--force",
            ]
        )
        == 0
    )
    assert json.loads((out / "summary.json").read_text())[0]["n"] == 8 and first


def test_prepare_rejects_unknown_split(tmp_path, capsys):
    code = main(
        ["prepare", "--out", str(tmp_path), "--set", f"root={tmp_path}", "splits=[pretrian]"]
    )
    assert code == 2 and "unknown FactorShapes split(s) ['pretrian']" in capsys.readouterr().err


def test_config_typo_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "core.data", "prepare", "--out", str(tmp_path), "--set", "nn=3"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("config error: unknown config key 'nn' (did you mean 'n'?)")
    )


def test_check_reports_labels(tmp_path, capsys):
    out = tmp_path / "check"
    code = main(
        [
            "check",
            "--out",
            str(out),
            "--set",
            f"data.root={tmp_path / 'cache'}",
            "data.split=cls-upright",
            "data.n=16",
            "parts=[val]",
        ]
    )
    assert code == 0
    row = json.loads((out / "summary.json").read_text())[0]
    assert row["images"] == 16 and row["skipped"] == 0 and row["shapes"] == [[3, 64, 64]]
    assert set(row["label_names"]) == {
        "shape",
        "hue",
        "chiral",
        "texture",
        "size",
        "pos",
        "bg",
        "light",
    }
    assert sum(row["label_counts"]["shape"].values()) == 16
