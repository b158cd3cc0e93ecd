"""The method table (core/methods.py): a new SSL method is one loss module, one config and one
table line. Shown with a method that exists only in this test."""

from __future__ import annotations

import importlib
import json
import sys
import types

import pytest
import torch
import yaml

from core.checkpoints import load_checkpoint
from core.config import ConfigError, load_config
from core.methods import METHODS, Method, mask_kind, uses_uncertainty
from pretrain.config import PretrainConfig, method_options
from tests.pretrain.test_train import TINY, fit


def _alignment_loss_module() -> types.ModuleType:
    """The loss module: ``build(cfg, ops)`` returns a module of (z_a, z_b) -> (total, terms)."""

    class Alignment(torch.nn.Module):
        def forward(self, z_a, z_b):
            inv = (z_a - z_b).square().mean()
            std = torch.sqrt(torch.cat([z_a, z_b]).var(0) + 1e-4)
            var = torch.relu(1 - std).mean()  # keeps the embedding from collapsing
            return inv + 10 * var, {"inv": inv.detach(), "var": var.detach()}

    module = types.ModuleType("pretrain.losses.alignment_for_test")
    module.build = lambda cfg, ops=None: Alignment()
    return module


@pytest.fixture
def data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MAST_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data"))


@pytest.fixture
def alignment_method(monkeypatch):
    monkeypatch.setitem(sys.modules, "pretrain.losses.alignment_for_test", _alignment_loss_module())
    monkeypatch.setitem(METHODS, "alignment", Method("alignment_for_test"))  # the table line


def test_a_new_method_is_a_loss_module_a_config_and_a_table_line(
    tmp_path, data_cache, alignment_method
):
    config = tmp_path / "alignment_r18w4_b16_3e_shapes.yaml"  # the config
    config.write_text(yaml.safe_dump({"method": "alignment"}))
    cfg = load_config(PretrainConfig, config, TINY)
    assert not cfg.uses_masks and not cfg.uses_uncertainty and cfg.mask_kind == "none"
    trainer = fit(cfg, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["method"] == "alignment" and state["masks"] is None
    assert state["uncertainty_head"] is None and trainer.step == state["step"] > 0
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    steps = [row for row in logged if "inv" in row]
    assert len(steps) == state["step"] and all(set(row) >= {"inv", "var"} for row in steps)


def test_the_config_takes_exactly_the_tables_methods(alignment_method):
    assert load_config(PretrainConfig, None, ["method=alignment"]).method == "alignment"
    with pytest.raises(ConfigError, match="'method' = 'vicreg2' is not allowed; choose one of: "):
        load_config(PretrainConfig, None, ["method=vicreg2"])


def test_the_tables_rules():
    names = ["vicreg", "mast", "mast_nounc", "mast_fixed"]
    assert [uses_uncertainty(m) for m in names] == [False, True, False, True]
    assert uses_uncertainty("mast_nounc", True) and not uses_uncertainty("mast", False)
    assert not uses_uncertainty("vicreg", True)  # no masks, no head
    assert [mask_kind(m) for m in names] == ["none", "learned", "learned", "fixed"]
    assert [mask_kind(m, "and") for m in names] == ["none", "assign", "assign", "assign_fixed"]
    # every method's loss module exists and builds from the default config of its method
    for name, entry in METHODS.items():
        cfg = load_config(PretrainConfig, None, [f"method={name}"])
        assert callable(importlib.import_module(f"pretrain.losses.{entry.loss}").build)
        assert set(cfg.loss.options) == set(method_options(name, {}))
    with pytest.raises(ValueError, match="unknown method 'vicreg2'; methods: vicreg, mast"):
        uses_uncertainty("vicreg2")


def test_a_methods_options_take_its_modules_defaults_and_reject_other_names(
    monkeypatch, alignment_method
):
    module = sys.modules["pretrain.losses.alignment_for_test"]
    monkeypatch.setattr(module, "OPTIONS", {"temperature": 0.5, "weight": 2.0}, raising=False)
    cfg = load_config(PretrainConfig, None, ["method=alignment", "loss.options.weight=3"])
    assert cfg.loss.options == {"temperature": 0.5, "weight": 3.0}  # recorded in the run's config
    flow = load_config(PretrainConfig, None, ["method=alignment", "loss.options={temperature: 1}"])
    assert flow.loss.options == {"temperature": 1.0, "weight": 2.0}
    with pytest.raises(
        ConfigError,
        match=r"unknown option 'loss.options.temprature' for method 'alignment'; its options: "
        r"temperature \(default 0.5\), weight \(default 2\)",
    ):
        load_config(PretrainConfig, None, ["method=alignment", "loss.options.temprature=1"])
    with pytest.raises(ConfigError, match="its options: none"):
        load_config(PretrainConfig, None, ["loss.options.temperature=1"])  # mast has none
    with pytest.raises(ConfigError, match="'loss.options.weight' must be a number"):
        load_config(PretrainConfig, None, ["method=alignment", "loss.options.weight=heavy"])
    with pytest.raises(ConfigError, match="'loss.options' has no sub-keys"):
        load_config(PretrainConfig, None, ["loss.options.a.b=1"])
