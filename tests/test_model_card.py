"""Model cards: each model folder's README.md has Hugging Face front matter matching its manifest (portable base model
and data names with hashes, eval sets and figures in model-index, config), is listed and hashed in the manifest, and a
changed byte fails `gristmill manifest verify`."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from align_helpers import pair_records, reward_config, sft_config, sft_records, write_jsonl
from gristmill.cli import main as cli_main
from gristmill.manifests import InputRecord, Manifest, read_manifest, resolve_input_path, sha256_file
from gristmill.manifests.card import (CARD_METRICS, INDEX_METRICS, add_model_index_results, config_toml, is_hub_id,
                                      model_card, model_index_result, model_index_results, write_model_card)


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


def strings(x) -> list[str]:
    """Every string in a parsed front matter (keys and values), to look for paths in it."""
    if isinstance(x, dict):
        return [s for k, v in x.items() for s in [str(k), *strings(v)]]
    if isinstance(x, list):
        return [s for v in x for s in strings(v)]
    return [x] if isinstance(x, str) else []


def assert_portable(text: str, *paths: str) -> None:
    """No path of this machine in a card: no `..` step, no absolute path, none of `paths`."""
    fm, body = split_card(text)
    for s in strings(fm):
        assert ".." not in s.split("/") and not s.startswith(("/", "~")), s
    for p in paths:
        assert p not in text, p
    assert "../../" not in body


def test_front_matter_matches_the_manifest(tmp_path):
    m = fake_manifest()
    rel = write_model_card(tmp_path, m)
    assert rel == Path("model/README.md")
    text = (tmp_path / rel).read_text(encoding="utf-8")
    fm, body = split_card(text)
    # The base is a gristmill stage with no Hub ancestor: no Hugging Face `base_model` (the Hub reads it as a
    # model id), gristmill's block names it by stage and id
    assert "base_model" not in fm and "base_model_relation" not in fm
    assert fm["gristmill"]["base_model"] == "sft-1111111111111111"
    assert fm["library_name"] == "transformers" and fm["pipeline_tag"] == "text-generation"
    assert fm["tags"] == ["gristmill", "dpo", "ipo", "lora"]
    assert "license" not in fm  # not known: never guessed
    # datasets: the training data only, by file name; the eval set and the models are not training data
    assert fm["datasets"] == ["pairs.jsonl"]
    # every input by portable name, in the manifest's order; raw ones with their content hash
    names = ["sft-1111111111111111", "pairs.jsonl", "held out.jsonl", "reward-2222222222222222"]
    for rec, row, name in zip(m.inputs, fm["gristmill"]["inputs"], names, strict=True):
        # raw inputs by content hash; stage inputs by id only (their manifest's hash holds its write time)
        assert row.get("sha256") == (None if rec.stage else rec.sha256)
        assert row["role"] == rec.role and row.get("id") == rec.id and row["name"] == name and "path" not in row
    assert_portable(text, "/abs/held out.jsonl", "../data", "../sft")
    # the eval set is where the held-out figures were measured: model-index, by file name and short hash
    [entry] = fm["model-index"]
    assert entry["name"] == "dpo-0123456789abcdef"
    [result] = entry["results"]
    assert result["task"] == {"type": "text-generation", "name": "Text Generation"}
    assert result["dataset"] == {"name": "held out.jsonl (sha256:cccccccccccccccc)", "type": "held-out.jsonl"}
    assert [(r["type"], r["value"]) for r in result["metrics"]] == [
        ("accuracy", 0.8125), ("reward_margin", 1.5), ("win_rate", 0.75), ("kl_divergence", 0.0123)]
    assert all(r["name"] == dict(CARD_METRICS["dpo"])[k] for r, k in
               zip(result["metrics"], ("eval_accuracy", "eval_margin", "win_rate", "kl_to_reference")))
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
    assert model_card(m) == text


def test_pretrain_card_has_no_base_model_and_reward_card_is_a_classifier():
    pre = fake_manifest("pretrain")
    pre.inputs = [InputRecord(role="data", path="../tok/manifest.json", sha256="e" * 64, stage="tokenize", id="3" * 16)]
    pre.config = {"seq_len": 128, "optim": {"lr": 0.003}}
    pre.metrics = {"val_loss": 2.5, "val_perplexity": 12.18, "tokens_per_s": 1.0}
    fm, body = split_card(model_card(pre))
    assert "base_model" not in fm and "base_model" not in fm["gristmill"]
    assert fm["tags"] == ["gristmill", "pretrain", "from-scratch"]
    assert fm["datasets"] == ["tokenize-3333333333333333"] and fm["gristmill"]["metrics"] == {"val_loss": 2.5, "val_perplexity": 12.18}
    [result] = fm["model-index"][0]["results"]  # the val split its tokenize stage wrote
    assert result["dataset"] == {"name": "val split of tokenize-3333333333333333", "type": "tokenize-3333333333333333",
                                 "split": "validation"}
    assert [(r["type"], r["value"]) for r in result["metrics"]] == [("loss", 2.5), ("perplexity", 12.18)]
    assert "from scratch" in body

    rm = fake_manifest("reward")
    rm.config = {"lora": {"enabled": False}}
    rm.inputs = [InputRecord(role="model", path="/models/hf-base", sha256="f" * 64, bytes=3)]  # a raw HF folder
    rm.metrics = {}
    fm, body = split_card(model_card(rm))
    assert "base_model" not in fm and fm["gristmill"]["base_model"] == "hf-base (sha256:ffffffffffffffff)"
    assert fm["pipeline_tag"] == "text-classification"
    assert fm["tags"] == ["gristmill", "reward-model", "full-fine-tune"] and "datasets" not in fm
    assert "model-index" not in fm  # no figures, no results
    assert "AutoModelForSequenceClassification.from_pretrained(folder)" in body and "/models/" not in body


def test_a_hash_split_is_named_as_a_held_out_split_of_the_training_files():
    m = fake_manifest("sft")
    m.config = {"data": {"eval_fraction": 0.1}, "lora": {"enabled": True}}
    m.inputs = [InputRecord(role="model", path="../pretrain/manifest.json", sha256="a" * 64, stage="pretrain", id="4" * 16),
                InputRecord(role="data", path="../../data/sft/train.jsonl", sha256="b" * 64, bytes=1),
                InputRecord(role="data", path="../../data/extra/train.jsonl", sha256="d" * 64, bytes=1)]
    m.metrics = {"eval_loss_before": 3.0, "eval_loss": 1.5, "answer_accuracy": 0.5, "answers_checked": 4}
    fm, _ = split_card(model_card(m))
    assert fm["datasets"] == ["sft/train.jsonl", "extra/train.jsonl"]  # one name each: their last two parts
    [result] = fm["model-index"][0]["results"]
    assert result["dataset"] == {
        "name": "held-out split (stable hash, eval_fraction 0.1) of sft/train.jsonl (sha256:bbbbbbbbbbbbbbbb)"
                " + extra/train.jsonl (sha256:dddddddddddddddd)", "type": "sft/train.jsonl", "split": "held-out"}
    # this model's figures only: the input model's ("_before") and the count stay in the gristmill block
    assert [(r["type"], r["value"]) for r in result["metrics"]] == [("loss", 1.5), ("exact_match", 0.5)]


def test_a_raw_base_model_two_levels_up_gets_a_portable_name(tmp_path):
    stage_dir = tmp_path / "runs" / "hh" / "sft"
    folder = tmp_path / "runs" / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    m = fake_manifest("sft")
    m.config, m.metrics = {"lora": {"enabled": True}}, {"eval_loss": 1.25}
    m.inputs = [InputRecord(role="model", path="../../smollm2-135m-instruct", sha256="a" * 64, bytes=9),
                InputRecord(role="data", path=str(tmp_path / "data" / "train.jsonl"), sha256="b" * 64, bytes=1),
                InputRecord(role="eval", path="../../../../../shared/val.jsonl", sha256="c" * 64, bytes=1)]
    text = (stage_dir / write_model_card(stage_dir, m)).read_text(encoding="utf-8")
    fm, body = split_card(text)
    assert_portable(text, str(tmp_path), "../../smollm2-135m-instruct")
    # no Hub id known: the folder's name and hash, in gristmill's block; no Hugging Face base_model to mislink
    assert "base_model" not in fm
    assert fm["gristmill"]["base_model"] == "smollm2-135m-instruct (sha256:aaaaaaaaaaaaaaaa)"
    assert "from `smollm2-135m-instruct (sha256:aaaaaaaaaaaaaaaa)`" in body
    assert fm["datasets"] == ["train.jsonl"] and "val.jsonl" not in fm["datasets"]
    assert fm["model-index"][0]["results"][0]["dataset"]["name"] == "val.jsonl (sha256:cccccccccccccccc)"

    # the folder says which Hub model it is (transformers 4 saved _name_or_path): that id is the base_model
    (folder / "config.json").write_text('{"model_type": "llama", "_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}')
    fm, body = split_card(model_card(m, stage_dir))
    assert fm["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and fm["base_model_relation"] == "finetune"
    assert fm["gristmill"]["base_model"] == fm["gristmill"]["inputs"][0]["name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # ... unless that was a local path, as it is when a folder was loaded from one
    (folder / "config.json").write_text('{"_name_or_path": "/home/me/models/smollm2"}')
    assert "base_model" not in split_card(model_card(m, stage_dir))[0]


def test_a_hub_cache_folder_and_a_gristmill_chain_name_their_hub_model(tmp_path):
    snap = tmp_path / "hf" / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    sft = fake_manifest("sft")
    sft.config = {"lora": {"enabled": False}}
    sft.inputs = [InputRecord(role="model", path=str(snap), sha256="a" * 64, bytes=9)]
    write_model_card(tmp_path / "sft", sft)
    fm, _ = split_card((tmp_path / "sft" / "model" / "README.md").read_text(encoding="utf-8"))
    assert fm["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # dpo on that sft stage: its base is the sft stage by name, and the Hub model it descends from
    dpo = fake_manifest("dpo")
    dpo.inputs[0] = InputRecord(role="model", path="../sft/manifest.json", sha256="a" * 64, stage="sft", id=sft.id)
    fm, body = split_card(model_card(dpo, tmp_path / "dpo"))
    assert fm["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert fm["gristmill"]["base_model"] == f"sft-{sft.id}"
    assert "which descends from [`HuggingFaceTB/SmolLM2-135M-Instruct`]" in body


def test_model_index_results_for_other_stages():
    rows = [("Text Generation", "hellaswag", "acc_norm", 0.25), ("Text Generation", "hellaswag", "acc", 0.24),
            ("Text Generation", "MMLU (5-shot)", "accuracy", 0.3), ("Text Generation", "MMLU (5-shot)", "broken", float("nan")),
            ("Text Generation", "empty", "missing", None)]
    results = model_index_results(rows, dataset_types={"MMLU (5-shot)": "cais/mmlu"})
    assert results == [
        {"task": {"type": "text-generation", "name": "Text Generation"},
         "dataset": {"name": "hellaswag", "type": "hellaswag"},
         "metrics": [{"type": "acc_norm", "value": 0.25, "name": "acc_norm"}, {"type": "acc", "value": 0.24, "name": "acc"}]},
        {"task": {"type": "text-generation", "name": "Text Generation"},
         "dataset": {"name": "MMLU (5-shot)", "type": "cais/mmlu"},
         "metrics": [{"type": "accuracy", "value": 0.3, "name": "accuracy"}]}]  # NaN and None left out, and "empty"
    one = model_index_result("Text Generation", "GSM8K test", [("exact match, strict", 0.1)], split="test")
    assert one["dataset"] == {"name": "GSM8K test", "type": "GSM8K-test", "split": "test"}
    assert one["metrics"] == [{"type": "exact_match_strict", "value": 0.1, "name": "exact match, strict"}]
    # a card with more results: the stage's own first, then these, in one model-index entry
    fm, _ = split_card(model_card(fake_manifest(), results=results))
    [entry] = fm["model-index"]
    assert [r["dataset"]["name"] for r in entry["results"]] == ["held out.jsonl (sha256:cccccccccccccccc)",
                                                                "hellaswag", "MMLU (5-shot)"]
    # added to a written card: its own results stay, a re-evaluated task and data set is replaced
    again = model_index_results([("Text Generation", "hellaswag", "acc_norm", 0.5)])
    fm2 = add_model_index_results(fm, again, name="unused")
    assert [(r["dataset"]["name"], r["metrics"][0]["value"]) for r in fm2["model-index"][0]["results"]] == [
        ("held out.jsonl (sha256:cccccccccccccccc)", 0.8125), ("MMLU (5-shot)", 0.3), ("hellaswag", 0.5)]
    assert fm2["model-index"][0]["name"] == "dpo-0123456789abcdef" and fm["model-index"] == [entry]  # fm untouched
    assert add_model_index_results({"library_name": "transformers"}, again, name="my-model")["model-index"] == [
        {"name": "my-model", "results": again}]


def test_model_index_follows_the_hub_spec():
    """Every result has what https://github.com/huggingface/hub-docs/blob/main/modelcard.md marks required, with
    the types the Hub checks; names and ids in the Hub's id shape."""
    for stage in ("pretrain", "sft", "reward", "dpo", "ppo"):
        m = fake_manifest(stage)
        m.metrics = {k: 0.5 for k, _ in CARD_METRICS[stage]}
        fm, _ = split_card(model_card(m))
        [entry] = fm["model-index"]
        assert set(entry) == {"name", "results"} and is_hub_id(entry["name"])
        for r in entry["results"]:
            assert set(r) == {"task", "dataset", "metrics"}
            assert isinstance(r["task"]["type"], str) and isinstance(r["task"]["name"], str)
            assert {"name", "type"} <= set(r["dataset"]) <= {"name", "type", "config", "split", "revision", "args"}
            assert all(isinstance(v, str) for v in r["dataset"].values()) and is_hub_id(r["dataset"]["type"])
            assert r["metrics"] and all(set(x) == {"type", "value", "name"} and isinstance(x["value"], (int, float))
                                        for x in r["metrics"])
            assert [x["type"] for x in r["metrics"]] == list(INDEX_METRICS[stage].values())
        assert all(is_hub_id(d) for d in fm.get("datasets", []))
    assert is_hub_id("gpt2") and is_hub_id("HuggingFaceTB/SmolLM2-135M") and not is_hub_id("../sft/model")
    assert not is_hub_id("/abs/x") and not is_hub_id("a b") and not is_hub_id("a--b") and not is_hub_id("x.jsonl (sha256:ab)")


def test_every_card_metric_is_labelled_once():
    for stage, pairs in CARD_METRICS.items():
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), stage
        assert set(INDEX_METRICS[stage]) <= set(keys), stage  # model-index figures are labelled figures
        # wall-clock figures change between two runs of one config; the card is a deterministic output
        assert not any(k.endswith(("_s", "_per_s")) or "time" in k for k in keys), stage


def test_config_toml_round_trips_floats_and_strings():
    cfg = {"a": 1e-05, "b": 3.0, "c": float("inf"), "s": "tab\there \u00e9", "l": [1, 2], "n": {"x": False}}
    assert tomllib.loads(config_toml("s", cfg))["s"] == cfg


def test_huggingface_hub_reads_the_card(tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    rel = write_model_card(tmp_path, fake_manifest())
    card = hub.ModelCard.load(tmp_path / rel)  # a local file: no network; an invalid model-index raises here
    assert card.data.library_name == "transformers" and card.data.base_model is None
    assert card.data.pipeline_tag == "text-generation" and "gristmill" in card.data.tags
    assert card.data.model_name == "dpo-0123456789abcdef" and card.data.datasets == ["pairs.jsonl"]
    assert [(r.metric_type, r.metric_value, r.dataset_type) for r in card.data.eval_results] == [
        ("accuracy", 0.8125, "held-out.jsonl"), ("reward_margin", 1.5, "held-out.jsonl"),
        ("win_rate", 0.75, "held-out.jsonl"), ("kl_divergence", 0.0123, "held-out.jsonl")]
    # and writes the same model-index back: the card's form is the library's own
    fm, _ = split_card((tmp_path / rel).read_text(encoding="utf-8"))
    assert card.data.to_dict()["model-index"] == fm["model-index"]


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
    if model_inputs:  # the base: the upstream stage by name, whose own card is the model folder's beside its manifest
        up = read_manifest(resolve_input_path(folder, model_inputs[0]).parent)
        assert fm["gristmill"]["base_model"] == f"{up.stage}-{up.id}" and "base_model" not in fm  # no Hub ancestor
        assert split_card((resolve_input_path(folder, model_inputs[0]).parent / "model" / "README.md")
                          .read_text(encoding="utf-8"))[0]["model-index"][0]["name"] == f"{up.stage}-{up.id}"
    else:
        assert stage == "pretrain" and "base_model" not in fm
    for i, rec in zip(m.inputs, fm["gristmill"]["inputs"], strict=True):  # raw: the manifest's and the file's hash
        if i.stage:
            assert "sha256" not in rec and rec["id"] == i.id == read_manifest(resolve_input_path(folder, i).parent).id
            assert rec["name"] == f"{i.stage}-{i.id}"
        else:
            assert rec["sha256"] == i.sha256 == sha256_file(resolve_input_path(folder, i))
            assert rec["name"] == Path(i.path).name
    assert_portable(card.read_text(encoding="utf-8"), str(folder.parent))
    [result] = fm["model-index"][0]["results"]  # this stage's held-out figures, on the set they were measured on
    held = {"pretrain": "val split of tokenize-", "reward": " of pairs.jsonl (sha256:", "sft": " of sft.jsonl (sha256:"}
    assert held[stage] in result["dataset"]["name"] and (stage == "pretrain") == (result["dataset"]["split"] == "validation")
    assert {x["type"]: x["value"] for x in result["metrics"]} == {
        t: m.metrics[k] for k, t in INDEX_METRICS[stage].items() if m.metrics.get(k) is not None}
    assert fm["pipeline_tag"] == ("text-classification" if stage == "reward" else "text-generation")
    # the stage's report names its inputs inside the run relative to the stage folder, normalised
    report = (folder / "report.md").read_text(encoding="utf-8")
    assert str(folder.parent) not in report and f"`../{'tok' if stage == 'pretrain' else 'pretrain/model'}`" in report
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
