"""Model cards: each model folder's README.md has Hugging Face front matter matching its manifest (base model, data
hashes, metrics, config), is listed and hashed in the manifest, and a changed byte fails `gristmill manifest verify`."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from align_helpers import pair_records, reward_config, sft_config, sft_records, write_jsonl
from gristmill.cli import main as cli_main
from gristmill.manifests import InputRecord, Manifest, read_manifest, resolve_input_path, sha256_file
from gristmill.manifests.card import CARD_METRICS, config_toml, model_card, write_model_card


def split_card(text: str) -> tuple[dict, str]:
    """(front matter as parsed by PyYAML, body): the card must open with a `---` fenced YAML block."""
    m = re.match(r"---\n(.*?\n)---\n(.*)", text, re.S)
    assert m, "the card does not open with a --- YAML block ---"
    return yaml.safe_load(m.group(1)), m.group(2)


def toml_block(body: str) -> dict:
    return tomllib.loads(re.search(r"```toml\n(.*?)```", body, re.S).group(1))


def without_none(d: dict) -> dict:
    return {k: without_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def fake_manifest(stage: str = "dpo") -> Manifest:
    """A manifest as a dpo stage writes it: a stage input model, raw data, a reward model, mixed config values."""
    config = {"loss": "ipo", "beta": 0.1, "max_steps": 0, "cache_dir": "", "note": 'a "quoted" path\\x',
              "eval_every": None, "lora": {"enabled": True, "r": 8, "target_modules": ["q_proj", "v_proj"]},
              "optim": {"lr": 1e-05, "clip": 1.0}}
    inputs = [InputRecord(role="model", path="../sft/manifest.json", sha256="a" * 64, stage="sft", id="1" * 16),
              InputRecord(role="data", path="../data/pairs.jsonl", sha256="b" * 64, bytes=10),
              InputRecord(role="eval", path="/abs/held out.jsonl", sha256="c" * 64, bytes=5),
              InputRecord(role="reward", path="../reward/manifest.json", sha256="d" * 64, stage="reward", id="2" * 16)]
    metrics = {"eval_accuracy": 0.8125, "eval_margin": 1.5, "win_rate": 0.75, "reward_gain": None,
               "kl_to_reference": 0.0123, "train_time_s": 12.5, "tokens_per_s": 999.0}
    return Manifest(stage=stage, id="0123456789abcdef", config=config, inputs=inputs, metrics=metrics,
                    software={"gristmill": "0.1.0", "git_commit": "deadbeef"}, created="2026-12-03T00:00:00Z")


def test_front_matter_matches_the_manifest(tmp_path):
    m = fake_manifest()
    rel = write_model_card(tmp_path, m)
    assert rel == Path("model/README.md")
    fm, body = split_card((tmp_path / rel).read_text(encoding="utf-8"))
    assert fm["base_model"] == "../sft/model"  # the upstream stage's model folder, beside its manifest
    assert fm["library_name"] == "transformers" and fm["pipeline_tag"] == "text-generation"
    assert fm["tags"] == ["gristmill", "dpo", "ipo", "lora"]
    assert "license" not in fm  # not known: never guessed
    # datasets: every non-model input, and each one's sha256 is the manifest's
    assert fm["datasets"] == ["../data/pairs.jsonl", "/abs/held out.jsonl"]
    recorded = {i["path"]: i for i in fm["gristmill"]["inputs"]}
    for rec in m.inputs:
        # raw inputs by content hash; stage inputs by id only (their manifest's hash holds its write time)
        assert recorded[rec.path].get("sha256") == (None if rec.stage else rec.sha256)
        assert recorded[rec.path]["role"] == rec.role
        assert recorded[rec.path].get("id") == rec.id
    # metrics: the stage's chosen ones, values exact, nulls and wall-clock figures left out
    assert fm["gristmill"]["metrics"] == {"eval_accuracy": 0.8125, "eval_margin": 1.5, "win_rate": 0.75,
                                          "kl_to_reference": 0.0123}
    assert fm["gristmill"]["stage"] == "dpo" and fm["gristmill"]["id"] == m.id
    # the config block is a recipe section that gives the resolved config back (TOML has no null)
    assert toml_block(body)["dpo"] == without_none(m.config)
    assert "AutoModelForCausalLM.from_pretrained(folder)" in body
    # no times: the card depends on nothing but the manifest's content
    assert "2026-12-03" not in body and "deadbeef" not in body
    m.created, m.software["git_commit"] = "2027-01-01T00:00:00Z", "cafe"
    assert model_card(m) == (tmp_path / rel).read_text(encoding="utf-8")


def test_pretrain_card_has_no_base_model_and_reward_card_is_a_classifier():
    pre = fake_manifest("pretrain")
    pre.inputs = [InputRecord(role="data", path="../tok/manifest.json", sha256="e" * 64, stage="tokenize", id="3" * 16)]
    pre.config = {"seq_len": 128, "optim": {"lr": 0.003}}
    pre.metrics = {"val_loss": 2.5, "val_perplexity": 12.18, "tokens_per_s": 1.0}
    fm, body = split_card(model_card(pre))
    assert "base_model" not in fm and fm["tags"] == ["gristmill", "pretrain", "from-scratch"]
    assert fm["datasets"] == ["../tok"] and fm["gristmill"]["metrics"] == {"val_loss": 2.5, "val_perplexity": 12.18}
    assert "from scratch" in body

    rm = fake_manifest("reward")
    rm.config = {"lora": {"enabled": False}}
    rm.inputs = [InputRecord(role="model", path="/models/hf-base", sha256="f" * 64, bytes=3)]  # a raw HF folder
    fm, body = split_card(model_card(rm))
    assert fm["base_model"] == "/models/hf-base" and fm["pipeline_tag"] == "text-classification"
    assert fm["tags"] == ["gristmill", "reward-model", "full-fine-tune"] and "datasets" not in fm
    assert "AutoModelForSequenceClassification.from_pretrained(folder)" in body


def test_every_card_metric_is_labelled_once():
    for stage, pairs in CARD_METRICS.items():
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), stage
        # wall-clock figures change between two runs of one config; the card is a deterministic output
        assert not any(k.endswith(("_s", "_per_s")) or "time" in k for k in keys), stage


def test_config_toml_round_trips_floats_and_strings():
    cfg = {"a": 1e-05, "b": 3.0, "c": float("inf"), "s": "tab\there \u00e9", "l": [1, 2], "n": {"x": False}}
    assert tomllib.loads(config_toml("s", cfg))["s"] == cfg


def test_huggingface_hub_reads_the_card(tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    rel = write_model_card(tmp_path, fake_manifest())
    card = hub.ModelCard.load(tmp_path / rel)  # a local file: no network
    assert card.data.base_model == "../sft/model" and card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "text-generation" and "gristmill" in card.data.tags


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """tokenize -> pretrain -> sft and -> reward (the reward model on the base: the cheapest chain), tiny: real
    stage folders with their cards."""
    from gristmill.align.reward import run_reward
    from gristmill.align.sft import run_sft
    from gristmill.pretrain.run import run_pretrain
    from pretrain_helpers import make_tokens, tiny

    root = tmp_path_factory.mktemp("card")
    run_pretrain(tiny(max_steps=6, checkpoint={"every": 6}), {"data": [make_tokens(root / "tok")]}, root / "pretrain")
    pairs = write_jsonl(root / "pairs.jsonl", pair_records(40))
    run_reward(reward_config(max_steps=4, checkpoint={"every": 4}), {"model": [root / "pretrain"], "data": [pairs]},
               root / "reward")
    return root


@pytest.fixture(scope="module")
def sft_run(chain):
    from gristmill.align.sft import run_sft

    run_sft(sft_config(max_steps=4, eval_generate=2, samples=1, checkpoint={"every": 4}),
            {"model": [chain / "pretrain"], "data": [write_jsonl(chain / "sft.jsonl", sft_records(40))]}, chain / "sft")
    return chain


@pytest.mark.parametrize("stage", ["pretrain", "reward", "sft"])
def test_stage_writes_its_card_into_the_model_folder_and_lists_it(request, stage):
    folder = request.getfixturevalue("sft_run" if stage == "sft" else "chain") / stage
    m = read_manifest(folder)
    card = folder / "model" / "README.md"
    listed = m.output("model/README.md")
    assert listed.kind == "card" and listed.deterministic is True and listed.sha256 == sha256_file(card)
    fm, body = split_card(card.read_text(encoding="utf-8"))
    assert fm["gristmill"]["id"] == m.id and fm["gristmill"]["stage"] == stage
    assert fm["gristmill"]["metrics"] == {k: m.metrics[k] for k, _ in CARD_METRICS[stage] if m.metrics.get(k) is not None}
    assert fm["gristmill"]["metrics"], f"{stage}: the card quotes no metric"
    assert toml_block(body)[stage] == without_none(m.config)
    model_inputs = [i for i in m.inputs if i.role == "model"]
    if model_inputs:  # base_model: the upstream stage's model folder, read from this stage folder
        up = resolve_input_path(folder, model_inputs[0]).parent
        assert (folder / fm["base_model"]).resolve() == (up / "model").resolve()
        assert (folder / fm["base_model"] / "config.json").is_file()
    else:
        assert stage == "pretrain" and "base_model" not in fm
    for i in m.inputs:  # raw inputs: the card's hash is the manifest's and the file's own; stage inputs: the id
        rec = next(r for r in fm["gristmill"]["inputs"] if r["path"] == i.path)
        if i.stage:
            assert "sha256" not in rec and rec["id"] == i.id == read_manifest(resolve_input_path(folder, i).parent).id
        else:
            assert rec["sha256"] == i.sha256 == sha256_file(resolve_input_path(folder, i))
    assert fm["pipeline_tag"] == ("text-classification" if stage == "reward" else "text-generation")
    try:
        from huggingface_hub import ModelCard
    except ImportError:
        return
    assert ModelCard.load(card).data.to_dict()["gristmill"] == fm["gristmill"]  # the Hub's parser reads it alike


def test_reward_card_loads_as_it_says(chain):
    from transformers import AutoModelForSequenceClassification

    folder = chain / "reward" / "model"
    assert "AutoModelForSequenceClassification" in (folder / "README.md").read_text(encoding="utf-8")
    assert AutoModelForSequenceClassification.from_pretrained(folder).config.num_labels == 1


def test_verify_fails_after_one_byte_of_the_card_changes(chain, tmp_path, capsys):
    import shutil

    folder = tmp_path / "reward"
    shutil.copytree(chain / "reward", folder, ignore=shutil.ignore_patterns("checkpoints"))
    assert cli_main(["manifest", "verify", str(folder)]) == 0
    card = folder / "model" / "README.md"
    data = bytearray(card.read_bytes())
    data[-2] ^= 0x01  # one bit of one byte, same size
    card.write_bytes(bytes(data))
    assert cli_main(["manifest", "verify", str(folder)]) != 0
    assert "README.md: sha256 mismatch" in capsys.readouterr().err
