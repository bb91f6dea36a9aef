"""The run planner with two fake stages: skip when finished, re-run on change and downstream,
--from / --until / --dry-run, and recipes that cannot run say why."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from gristmill.config import to_dict
from gristmill.manifests import RAW, begin_stage, output_record, read_manifest, sha256_file, write_manifest
from gristmill.runs import RunError, execute, format_plan, plan
from gristmill.stages import Role, StageSpec

CALLS: list[str] = []


@dataclass(kw_only=True)
class AlphaConfig:
    factor: int = 2


@dataclass(kw_only=True)
class BetaConfig:
    suffix: str = "!"


def run_alpha(config, inputs, out_dir, *, force=False):
    start = begin_stage("alpha", to_dict(config), inputs, out_dir, expect={"data": (RAW,)}, force=force)
    if start.done:
        return start.done
    CALLS.append("alpha")
    text = "".join(Path(p).read_text() for p in inputs["data"]) * config.factor
    (out_dir / "a.txt").write_text(text)
    start.manifest.outputs = [output_record(out_dir, "a.txt", "text")]
    write_manifest(out_dir, start.manifest)
    return start.manifest


def run_beta(config, inputs, out_dir, *, force=False):
    start = begin_stage("beta", to_dict(config), inputs, out_dir, expect={"data": ("alpha",)}, force=force)
    if start.done:
        return start.done
    CALLS.append("beta")
    (out_dir / "b.txt").write_text((inputs["data"][0] / "a.txt").read_text() + config.suffix)
    start.manifest.outputs = [output_record(out_dir, "b.txt", "text")]
    write_manifest(out_dir, start.manifest)
    return start.manifest


REGISTRY = {
    "alpha": StageSpec("alpha", "fake first stage", (Role("data", "--input", accepts=(RAW,), many=True),),
                       AlphaConfig, run_alpha),
    "beta": StageSpec("beta", "fake second stage", (Role("data", "--input", accepts=("alpha",)),), BetaConfig, run_beta),
}


@pytest.fixture
def recipe(tmp_path):
    (tmp_path / "in.txt").write_text("ab")
    CALLS.clear()
    return {"run": {"stages": ["alpha", "beta"]},
            "inputs": {"alpha": {"data": "in.txt"}, "beta": {"data": "@alpha"}},
            "alpha": {"factor": 2}}


def _plan(recipe, tmp_path, **kw):
    return plan(recipe, REGISTRY, run_dir=tmp_path / "run", recipe_dir=tmp_path, **kw)


def _actions(steps):
    return {s.name: s.action for s in steps}


def test_first_run_then_skip(recipe, tmp_path):
    steps = _plan(recipe, tmp_path)
    assert _actions(steps) == {"alpha": "run", "beta": "run"}
    ms = execute(steps, log=lambda s: None)
    assert CALLS == ["alpha", "beta"]
    assert (tmp_path / "run" / "beta" / "b.txt").read_text() == "abab!"
    assert [m.id for m in ms] == [s.id for s in steps]  # the plan derives the ids the stages write
    again = _plan(recipe, tmp_path)
    assert _actions(again) == {"alpha": "skip", "beta": "skip"}
    execute(again, log=lambda s: None)
    assert CALLS == ["alpha", "beta"]


def test_changed_config_reruns_stage_and_downstream(recipe, tmp_path):
    execute(_plan(recipe, tmp_path), log=lambda s: None)
    steps = _plan(recipe, tmp_path, overrides=["alpha.factor=3"])
    assert _actions(steps) == {"alpha": "run", "beta": "run"}
    assert "config changed (factor)" in steps[0].reason and "alpha re-runs" in steps[1].reason
    execute(steps, log=lambda s: None)
    assert (tmp_path / "run" / "beta" / "b.txt").read_text() == "ababab!"
    # a downstream-only change re-runs only downstream
    steps = _plan(recipe, tmp_path, overrides=["alpha.factor=3", "beta.suffix=?"])
    assert _actions(steps) == {"alpha": "skip", "beta": "run"}


def test_changed_raw_input_and_corrupted_output_rerun(recipe, tmp_path):
    execute(_plan(recipe, tmp_path), log=lambda s: None)
    (tmp_path / "run" / "beta" / "b.txt").write_text("tampered")
    steps = _plan(recipe, tmp_path)
    assert _actions(steps) == {"alpha": "skip", "beta": "run"} and steps[1].reason == "outputs do not verify"
    (tmp_path / "in.txt").write_text("xy")
    assert _actions(_plan(recipe, tmp_path)) == {"alpha": "run", "beta": "run"}


def test_dry_run_runs_nothing(recipe, tmp_path):
    steps = _plan(recipe, tmp_path)
    text = format_plan(steps)
    assert "alpha" in text and "no finished output yet" in text
    assert not (tmp_path / "run").exists() and CALLS == []


def test_from_and_until(recipe, tmp_path):
    with pytest.raises(RunError, match="--from beta: earlier stage 'alpha' has no finished output"):
        _plan(recipe, tmp_path, start="beta")
    steps = _plan(recipe, tmp_path, until="alpha")
    assert _actions(steps) == {"alpha": "run", "beta": "excluded"}
    execute(steps, log=lambda s: None)
    assert CALLS == ["alpha"] and not (tmp_path / "run" / "beta").exists()
    steps = _plan(recipe, tmp_path, start="beta")
    assert _actions(steps) == {"alpha": "excluded", "beta": "run"}
    execute(steps, log=lambda s: None)
    assert CALLS == ["alpha", "beta"]
    assert read_manifest(tmp_path / "run" / "beta").inputs[0].id == steps[0].id
    with pytest.raises(RunError, match="--until gamma: not a stage"):
        _plan(recipe, tmp_path, until="gamma")


@pytest.mark.parametrize("edit, match", [
    (lambda r: r["inputs"].__setitem__("beta", {"data": "@gamma"}), "no earlier stage 'gamma'"),
    (lambda r: r["inputs"].__setitem__("beta", {}), "missing input 'data'"),
    (lambda r: r["inputs"].__setitem__("beta", {"model": "x"}), "unknown input role"),
    (lambda r: r["inputs"]["alpha"].__setitem__("data", "nope/*.txt"), "matches no file"),
    (lambda r: r["inputs"]["alpha"].__setitem__("data", "missing.txt"), "does not exist"),
    (lambda r: r.__setitem__("alpah", {}), r"section\(s\) \[alpah\] name no stage"),
    (lambda r: r["run"].__setitem__("stages", []), "stages must list"),
    (lambda r: r["run"].__setitem__("stages", ["alpha", "alpha"]), "listed twice"),
    (lambda r: r["run"].__setitem__("stages", ["alpha", "delta"]), "unknown stage 'delta'"),
    (lambda r: r["run"].__setitem__("uses", {"beta2": "gamma"}), "uses maps step names to built-in stages"),
])
def test_bad_recipes_say_what_to_change(recipe, tmp_path, edit, match):
    edit(recipe)
    with pytest.raises(Exception, match=match):
        _plan(recipe, tmp_path)


def test_run_placeholder_with_a_relative_run_folder(recipe, tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "work" / "runs" / "r" / "data").mkdir(parents=True)
    (tmp_path / "work" / "runs" / "r" / "data" / "in.txt").write_text("zz")
    monkeypatch.chdir(tmp_path / "work")
    recipe["inputs"]["alpha"]["data"] = "{run}/data/in.txt"
    steps = plan(recipe, REGISTRY, run_dir=Path("runs/r"), recipe_dir=tmp_path / "recipes")
    assert steps[0].inputs["data"] == [tmp_path / "work" / "runs" / "r" / "data" / "in.txt"]
    execute(steps, log=lambda s: None)
    assert (tmp_path / "work" / "runs" / "r" / "beta" / "b.txt").read_text() == "zzzz!"


def test_upstream_that_ran_again_makes_downstream_stale(recipe, tmp_path):
    # Same config and inputs give the same id, but a stage that is run again writes a new manifest
    # (and a non-bit-reproducible trainer, other bytes): what was built on the old one runs again.
    execute(_plan(recipe, tmp_path), log=lambda s: None)
    (tmp_path / "run" / "alpha" / "a.txt").write_text("lost")
    steps = _plan(recipe, tmp_path)
    assert _actions(steps) == {"alpha": "run", "beta": "run"} and "alpha" in steps[1].reason
    execute(steps, log=lambda s: None)
    # beta was rebuilt, or kept only if alpha's new manifest came out byte-identical (same second)
    assert read_manifest(tmp_path / "run" / "beta").inputs[0].sha256 == \
        sha256_file(tmp_path / "run" / "alpha" / "manifest.json")
    # a stage run again by hand (not through the planner) is noticed too: it wrote a new manifest
    again = read_manifest(tmp_path / "run" / "alpha")
    again.created = "2030-01-01T00:00:00Z"
    write_manifest(tmp_path / "run" / "alpha", again)
    steps = _plan(recipe, tmp_path)
    assert _actions(steps) == {"alpha": "skip", "beta": "run"}
    assert steps[1].reason == "an input stage ran again since"
    CALLS.clear()
    execute(steps, log=lambda s: None)
    assert CALLS == ["beta"] and _actions(_plan(recipe, tmp_path)) == {"alpha": "skip", "beta": "skip"}


def test_a_stage_whose_code_is_missing_is_a_programming_error():
    # every built-in stage is built: a wrong "module:attr" is a plain ImportError / AttributeError, not a user error
    s = StageSpec(name="later", help="", roles=(), config="gristmill.config:NoSuchConfig",
                  run="gristmill.no_such_stage.run:run")
    with pytest.raises(AttributeError):
        s.config_cls()
    with pytest.raises(ImportError):
        s.run_fn()


def test_a_stage_runs_twice_under_two_names(recipe, tmp_path):
    recipe["run"] |= {"stages": ["alpha", "beta", "beta2"], "uses": {"beta2": "beta"}}
    recipe["inputs"]["beta2"] = {"data": "@alpha"}
    recipe["beta2"] = {"suffix": "?"}
    steps = _plan(recipe, tmp_path)
    assert [s.spec.name for s in steps] == ["alpha", "beta", "beta"] and steps[1].id != steps[2].id
    execute(steps)
    assert (tmp_path / "run" / "beta2" / "b.txt").read_text() == "abab?"
    assert read_manifest(tmp_path / "run" / "beta2").stage == "beta"
    assert _actions(_plan(recipe, tmp_path)) == {"alpha": "skip", "beta": "skip", "beta2": "skip"}  # ids agree


def test_a_step_without_its_own_section_takes_the_section_of_the_stage_it_uses(recipe, tmp_path):
    recipe["run"] |= {"stages": ["alpha", "beta2", "beta3"], "uses": {"beta2": "beta", "beta3": "beta"}}
    recipe["inputs"] |= {"beta2": {"data": "@alpha"}, "beta3": {"data": "@alpha"}}
    recipe["beta"] = {"suffix": "?"}  # no beta step: [beta] is the shared section
    recipe["beta3"] = {"suffix": "#"}  # its own section wins
    steps = _plan(recipe, tmp_path)
    assert [s.config.suffix for s in steps[1:]] == ["?", "#"]


def test_pretrain_takes_a_mixture_of_two_tokenize_steps(tmp_path):
    """The recipe form of a data mixture: a second curate and tokenize (with the first one's tokenizer) under
    other names, and pretrain's data a list of both."""
    from gristmill.stages import BUILTIN

    (tmp_path / "web.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "ref.jsonl").write_text('{"text": "clean"}\n')
    recipe = {"run": {"stages": ["curate", "curate-ref", "tokenize", "tokenize-ref", "pretrain"],
                      "uses": {"curate-ref": "curate", "tokenize-ref": "tokenize"}},
              "inputs": {"curate": {"data": "web.jsonl"}, "curate-ref": {"data": "ref.jsonl"},
                         "tokenize": {"data": "@curate"},
                         "tokenize-ref": {"data": "@curate-ref", "tokenizer": "@tokenize"},
                         "pretrain": {"data": ["@tokenize", "@tokenize-ref"]}},
              "pretrain": {"mixture": [0.8, 0.2]}}
    steps = plan(recipe, {s.name: s for s in BUILTIN}, run_dir=tmp_path / "run", recipe_dir=tmp_path)
    pre = steps[-1]
    assert pre.action == "run" and [p.name for p in pre.inputs["data"]] == ["tokenize", "tokenize-ref"]
    assert pre.config.mixture == [0.8, 0.2]
