"""Every recipe in recipes/ plans with --dry-run (its stages in order); inputs a user must give are named by their --set key; gpt2-124m refuses a CPU; web-small runs end to end on a tiny dump."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from gristmill.cli import main, registry
from gristmill.manifests import read_manifest
from gristmill.runs import RunError, load_recipe, plan

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALL_STAGES = ["reference-lm", "quality-model", "curate", "tokenize", "pretrain", "sft", "reward", "dpo", "ppo"]
# The stages each recipe must plan, in order; a new recipe is added here with its own list. The demo's
# list is its own [run] stages (the demo changes with the built stages; its own tests pin its content).
EXPECTED = {
    "demo": tomllib.loads((RECIPES / "demo.toml").read_text())["run"]["stages"],
    "web-small": ALL_STAGES + ["eval-base", "eval-sft", "eval-dpo", "eval-ppo"],
    "gpt2-124m": ALL_STAGES,
    "smollm2-hh": ["sft", "reward", "dpo", "ppo", "eval-smollm2", "eval-sft", "eval-dpo", "eval-ppo"],
}
# Inputs the user supplies (no default in the recipe), with the --set key the error must name.
USER_INPUTS = {"web-small": ["inputs.curate.data"], "gpt2-124m": ["inputs.curate.data"]}


def placeholder_sets(recipe: dict, tmp_path: Path) -> list[str]:
    """--set for every raw input of the recipe, and every required one it leaves to the user, each a
    small file in tmp_path: the plan hashes raw inputs, and the tests must not need ../shared/data."""
    reg = registry()
    uses = recipe["run"].get("uses", {})
    sets = []
    for stage in recipe["run"]["stages"]:
        spec = reg[uses.get(stage, stage)]
        given = recipe.get("inputs", {}).get(stage, {})
        for role in spec.roles:
            values = given.get(role.name)
            if values is None and not role.required:
                continue
            values = values if isinstance(values, list) else [values]
            if any(isinstance(v, str) and v.startswith("@") for v in values):
                continue
            paths = []
            for i in range(len(values)):
                p = tmp_path / "inputs" / f"{stage}.{role.name}.{i}"
                p.parent.mkdir(exist_ok=True)
                p.write_text(f"placeholder for {stage}.{role.name}\n")
                paths.append(str(p))
            sets.append(f"inputs.{stage}.{role.name}={json.dumps(paths if len(paths) > 1 else paths[0])}")
    return sets


def test_expected_lists_every_recipe():
    assert sorted(p.stem for p in RECIPES.glob("*.toml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_plans_its_stages_in_order(name, tmp_path, capsys):
    path = RECIPES / f"{name}.toml"
    sets = placeholder_sets(load_recipe(path), tmp_path)
    argv = ["run", str(path), "--out", str(tmp_path / "run"), "--dry-run"] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [ln.split()[0] for ln in lines] == EXPECTED[name]
    assert all(ln.split()[1] == "run" for ln in lines)  # a fresh folder: every stage runs, none is blocked
    assert not (tmp_path / "run").exists()  # a dry run writes nothing, not even the lock


@pytest.mark.parametrize("name", sorted(USER_INPUTS))
def test_a_missing_user_input_names_its_set_key(name, tmp_path):
    path = RECIPES / f"{name}.toml"
    recipe = load_recipe(path)
    keys = USER_INPUTS[name]
    sets = [s for s in placeholder_sets(recipe, tmp_path) if s.split("=")[0] not in keys]
    with pytest.raises(RunError, match=f"--set {keys[0]}=PATH"):
        plan(recipe, registry(), run_dir=tmp_path / "run", recipe_dir=RECIPES, overrides=sets)
    assert f"--set '{keys[0]}=" in path.read_text().split("\n\n")[0]  # the header shows a command that gives it


def test_smollm2_model_path_missing_names_its_set_key(tmp_path):
    path = RECIPES / "smollm2-hh.toml"
    recipe = load_recipe(path)
    sets = [s for s in placeholder_sets(recipe, tmp_path) if not s.startswith("inputs.sft.model=")]
    with pytest.raises(RunError, match=r"sft\.model: .*nowhere does not exist; .*--set inputs\.sft\.model=PATH"):
        plan(recipe, registry(), run_dir=tmp_path / "run", recipe_dir=RECIPES,
             overrides=sets + [f"inputs.sft.model={tmp_path / 'nowhere'}"])
    header = path.read_text().split("\n\n")[0]
    assert "convert_smollm2.py" in header and "--set inputs.sft.model=" in header
    # the recipe's default is where the conversion command in its header writes
    assert (RECIPES / tomllib.loads(path.read_text())["inputs"]["sft"]["model"]).resolve() == \
        (RECIPES.parent / "runs" / "smollm2-135m-instruct").resolve()


def test_set_input_paths_are_relative_to_the_current_folder(tmp_path, monkeypatch):
    recipe = load_recipe(RECIPES / "web-small.toml")
    sets = [s for s in placeholder_sets(recipe, tmp_path) if not s.startswith("inputs.curate.data=")]
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "a.warc.gz").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    steps = plan(recipe, registry(), run_dir=tmp_path / "run", recipe_dir=RECIPES,
                 overrides=sets + ["inputs.curate.data=dumps/*.warc.gz"])
    curate = next(s for s in steps if s.name == "curate")
    assert curate.inputs["data"] == [tmp_path / "dumps" / "a.warc.gz"]  # not recipes/dumps/...


def test_gpt2_124m_refuses_a_cpu_before_any_stage(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the recipe would start")
    path = RECIPES / "gpt2-124m.toml"
    sets = placeholder_sets(load_recipe(path), tmp_path)
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run)] + [a for s in sets for a in ("--set", s)]) == 1
    err = capsys.readouterr().err
    assert 'device = "cuda"' in err and "--set pretrain.device=cpu" in err and "GPU-only" in err
    assert [p.name for p in run.iterdir()] == [".gristmill.lock"]  # no stage started


# The shortened web-small run: every stage, on a tiny demo dump standing in for the user's, sized down by --set.
# Generation (report samples, judging) dominates the align stages at this size: 2 judged prompts, no samples.
SHORT = [
    "curate.workers=1", "tokenize.vocab_size=1024",
    "pretrain.preset=tiny", "pretrain.max_steps=4", "pretrain.batch_size=4", "pretrain.seq_len=64",
    "pretrain.eval_every=0", "pretrain.eval_batches=1", "pretrain.optim.warmup_steps=1",
    "sft.max_steps=2", "sft.max_length=64", "sft.batch_size=4", "sft.eval_generate=0", "sft.samples=0",
    "sft.optim.warmup_steps=0", "sft.data.max_records=32",
    "reward.max_steps=2", "reward.max_length=64", "reward.batch_size=4", "reward.optim.warmup_steps=0",
    "reward.data.max_records=32",
    "dpo.max_steps=2", "dpo.max_length=64", "dpo.batch_size=4", "dpo.judge_prompts=2", "dpo.max_new_tokens=4",
    "dpo.samples=0", "dpo.optim.warmup_steps=0", "dpo.data.max_records=32",
    "ppo.max_steps=1", "ppo.prompts_per_iteration=2", "ppo.minibatch_size=2", "ppo.max_new_tokens=4",
    "ppo.judge_prompts=2", "ppo.eval_samples=0", "ppo.samples_shown=0", "ppo.max_length=64", "ppo.data.max_records=32",
    'eval.tasks=["choices.jsonl:multiple_choice", "answers.jsonl:generative"]', "eval.limit=4", "eval.max_new_tokens=4",
]


def test_web_small_runs_end_to_end_on_a_tiny_dump(tmp_path, capsys):
    data = tmp_path / "dump"
    assert main(["demo-data", "--out", str(data), "--pages", "60"]) == 0
    inputs = {"reference-lm.text": "reference/clean.txt", "quality-model.positive": "reference/clean.txt",
              "quality-model.negative": "web.warc.gz", "curate.data": "web.warc.gz", "sft.data": "sft/train.jsonl",
              "reward.data": "preference/train.jsonl", "reward.eval": "preference/val.jsonl",
              "dpo.data": "preference/train.jsonl", "dpo.eval": "preference/val.jsonl",
              "ppo.data": "prompts/train.jsonl", "ppo.eval": "prompts/val.jsonl"}
    inputs |= {f"eval-{m}.data": "eval" for m in ("base", "sft", "dpo", "ppo")}  # the dump's own tasks, not CORE
    sets = [f"inputs.{k}={data / v}" for k, v in inputs.items()] + SHORT
    argv = ["run", str(RECIPES / "web-small.toml"), "--out", str(tmp_path / "run")] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0, capsys.readouterr().err
    for stage in EXPECTED["web-small"]:
        assert read_manifest(tmp_path / "run" / stage).stage == ("eval" if stage.startswith("eval-") else stage)
    # the aligned model traces back to the user's dump: ppo <- sft <- pretrain <- tokenize <- curate <- web.warc.gz
    assert main(["manifest", "lineage", str(tmp_path / "run" / "ppo")]) == 0
    assert "web.warc.gz" in capsys.readouterr().out
    # run again: every stage is recognised as finished
    assert main(argv + ["--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [ln.split()[1] for ln in lines] == ["skip"] * len(EXPECTED["web-small"])
