"""`make analysis`'s run discovery: which folders count as pretraining runs, and what is read from
them."""

from analysis import pipeline


def test_runs_are_folders_with_a_checkpoint_and_their_configs_are_read_once(tmp_path, capsys):
    for name, method, scale in (
        ("a_s0", "mast", 1.25),
        ("b_s0", "vicreg", 1.0),
        ("started", "mast", 1.0),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(
            f"method: {method}\ndata: {{object_scale: {scale}}}\n"
            "model: {arch: resnet18, base_width: 16}\n"
        )
        if name != "started":
            (folder / "last.pt").write_bytes(b"")
    runs = pipeline.find_runs(tmp_path)
    assert [(f.name, cfg["method"]) for f, cfg in runs] == [("a_s0", "mast"), ("b_s0", "vicreg")]
    assert pipeline._object_scale(runs) == 1.25  # the first run's, with a warning
    assert "different object scales [1.0, 1.25]" in capsys.readouterr().err
    assert {pipeline._arch_label(cfg) for _, cfg in runs} == {"resnet18w16"}


def test_sweep_runs_are_found_one_level_down(tmp_path):
    for path in (
        "sweeps/combine/and_s0",
        "sweeps/combine/unstarted",
        "sweeps/rho/0.25_s0",
        "top_s0",
    ):
        folder = tmp_path / path
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text("method: mast_nounc\n")
        if "unstarted" not in path:
            (folder / "last.pt").write_bytes(b"")
    found = [str(f.relative_to(tmp_path)) for f, _ in pipeline.find_sweep_runs(tmp_path)]
    assert found == ["sweeps/combine/and_s0", "sweeps/rho/0.25_s0"]
    assert pipeline.find_sweep_runs(tmp_path / "top_s0") == []
