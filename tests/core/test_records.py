import json
import math
import multiprocessing as mp

import pytest

from core.records import (
    FIELDS,
    RecordError,
    append_record,
    checkpoint_ref,
    make_record,
    read_records,
)


def record(i: int, writer: str = "a", **extra) -> dict:
    return make_record(
        stage="eval-cls",
        method="mast",
        arch="resnet18",
        dataset="factorshapes",
        task="hue",
        protocol="knn",
        seed=i % 3,
        metric="top1",
        value=float(i),
        config={"writer": writer},
        git_commit="abc",
        **extra,
    )


def test_make_record_orders_fields_and_keeps_extras():
    rec = record(1, versions={"torch": "x"})
    assert list(rec)[: len(FIELDS)] == list(FIELDS) and rec["versions"] == {"torch": "x"}
    assert rec["run_id"] and rec["time"] and rec["pretrain_ckpt"] is None


@pytest.mark.parametrize("missing", ["stage", "seed", "value", "metric"])
def test_missing_required_field(missing):
    fields = dict(
        stage="s", method="m", dataset="d", task="t", protocol="p", seed=0, metric="acc", value=1.0
    )
    del fields[missing]
    with pytest.raises(RecordError, match=missing):
        make_record(**fields)


def test_value_must_be_a_number():
    with pytest.raises(RecordError, match="must be a number"):
        make_record(
            stage="s",
            method="m",
            dataset="d",
            task="t",
            protocol="p",
            seed=0,
            metric="acc",
            value="high",
        )


def test_append_and_read_back(tmp_path):
    path = tmp_path / "records" / "eval-cls.jsonl"
    for i in range(3):
        append_record(path, record(i))
    append_record(path, record(3) | {"value": math.nan})
    frame = read_records(path)
    assert list(frame["value"][:3]) == [0.0, 1.0, 2.0] and frame["value"].isna().iloc[3]
    assert frame["config"][0] == {"writer": "a"}
    assert read_records(tmp_path / "records").shape == frame.shape  # a folder reads every *.jsonl


def test_torn_line_is_skipped(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    append_record(path, record(0))
    with open(path, "a") as handle:
        handle.write('{"stage": "half a li')
    frame = read_records(path)
    assert len(frame) == 1 and "r.jsonl:2" in caplog.text


def test_empty_source_has_schema_columns(tmp_path):
    frame = read_records(tmp_path)
    assert frame.empty and set(FIELDS) <= set(frame.columns)


def test_checkpoint_ref_hashes_file(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"abc")
    ref = checkpoint_ref(path)
    assert ref == {
        "path": str(path),
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    }
    assert checkpoint_ref(None) is None


def _writer(path: str, name: str, count: int, start) -> None:
    start.wait()
    for i in range(count):
        # A long config makes each line several kB, larger than a pipe buffer, so torn writes would
        # show.
        append_record(path, record(i, name) | {"config": {"writer": name, "pad": "x" * 5000}})


def test_concurrent_appends_lose_no_line(tmp_path):
    path = tmp_path / "shared.jsonl"
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), name, 300, start)) for name in ("a", "b")]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 600
    rows = [json.loads(line) for line in lines]  # every line is whole JSON
    for name in ("a", "b"):
        values = sorted(r["value"] for r in rows if r["config"]["writer"] == name)
        assert values == [float(i) for i in range(300)]
