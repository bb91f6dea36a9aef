"""Configs: TOML sections and --set overrides become typed dataclasses, or clear errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from gristmill.config import ConfigError, apply_overrides, build, load_toml, parse_override, to_dict


@dataclass(kw_only=True)
class Inner:
    window: int = 50
    z: float = 6.0


@dataclass(kw_only=True)
class Cfg:
    steps: int = 10
    lr: float = 3e-4
    name: str = "tiny"
    compile: bool = False
    languages: list[str] = field(default_factory=lambda: ["en"])
    model: str | None = None
    mode: Literal["local", "slurm"] = "local"
    spikes: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError(f"steps={self.steps} must be positive; set --set x.steps=100")


def test_parse_override_types():
    assert parse_override("pretrain.max_steps=200") == (["pretrain", "max_steps"], 200)
    assert parse_override("a.lr=1e-3") == (["a", "lr"], 1e-3)
    assert parse_override("a.flag=true") == (["a", "flag"], True)
    assert parse_override('a.langs=["en", "de"]') == (["a", "langs"], ["en", "de"])
    assert parse_override("a.path=/data/x.warc") == (["a", "path"], "/data/x.warc")  # bare word -> string
    assert parse_override("a.b.c=1") == (["a", "b", "c"], 1)
    for bad in ("nokey", "=1", "a=1", "a..b=1"):
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_build_with_defaults_overrides_and_nested():
    data = apply_overrides({"x": {"steps": 5}}, ["x.lr=1", "x.spikes.window=7", "x.languages=[\"fr\"]"])
    c = build(Cfg, data["x"], section="x")
    assert c.steps == 5 and c.lr == 1.0 and isinstance(c.lr, float)
    assert c.spikes == Inner(window=7) and c.languages == ["fr"]
    d = to_dict(c)
    assert d == {"steps": 5, "lr": 1.0, "name": "tiny", "compile": False, "languages": ["fr"], "model": None,
                 "mode": "local", "spikes": {"window": 7, "z": 6.0}}
    assert build(Cfg, d, section="x") == c  # the manifest's config rebuilds the same config


@pytest.mark.parametrize("data, match", [
    ({"stepz": 1}, r"unknown key\(s\) stepz; allowed: compile, languages, lr, mode, model, name, spikes, steps"),
    ({"steps": "ten"}, r"x.steps: expected an integer"),
    ({"steps": 1.5}, r"x.steps: expected an integer"),
    ({"compile": 1}, r"x.compile: expected true or false"),
    ({"languages": "en"}, r"x.languages: expected a list"),
    ({"mode": "ray"}, r"x.mode: 'ray' is not one of 'local', 'slurm'"),
    ({"spikes": {"windw": 1}}, r"\[x.spikes\] unknown key\(s\) windw"),
    ({"steps": 0}, r"steps=0 must be positive; set --set x.steps=100"),
    ({"model": 3}, r"x.model: 3 is not"),
])
def test_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        build(Cfg, data, section="x")


def test_load_toml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_toml(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[x\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"x": 1}, ["x.y=2"])


@dataclass(kw_only=True)
class Stage:
    # the stage's own default for a shared section differs from the section class's defaults
    spikes: Inner = field(default_factory=lambda: Inner(window=8, z=3.0))


def test_a_partial_nested_section_overrides_the_stages_default_not_the_class_default():
    assert build(Stage, {}, section="s").spikes == Inner(window=8, z=3.0)
    assert build(Stage, {"spikes": {"z": 4.0}}, section="s").spikes == Inner(window=8, z=4.0)
    data = apply_overrides({}, ["s.spikes.window=2"])
    assert build(Stage, data["s"], section="s").spikes == Inner(window=2, z=3.0)
    with pytest.raises(ConfigError, match=r"\[s.spikes\] unknown key"):
        build(Stage, {"spikes": {"zz": 1}}, section="s")
