"""The curation ablation on a tiny dump: same tokenizer and tokens seen by both arms, held-out text unseen, report, plot, skip on rerun."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gristmill import ablate
from gristmill.curate.minhash import normalize_text
from gristmill.manifests import read_manifest, verify
from gristmill.tokenize.run import iter_documents

PAGES = 40  # the smallest dump whose curated text fills a few training windows

RECIPE = """
[run]
stages = ["reference-lm", "quality-model", "curate", "tokenize", "pretrain", "sft", "eval-base"]
uses = { eval-base = "eval" }

[inputs]
reference-lm = { text = "{run}/data/reference/clean.txt" }
quality-model = { positive = "{run}/data/reference/clean.txt", negative = "{run}/data/web.warc.gz", reference = "@reference-lm" }
curate = { data = "{run}/data/web.warc.gz", reference = "@reference-lm", quality = "@quality-model" }
tokenize = { data = "@curate" }
pretrain = { data = "@tokenize" }
sft = { model = "@pretrain", data = "{run}/data/sft/train.jsonl" }
eval-base = { model = "@pretrain", data = "{run}/data/eval" }

[curate.url_filter]
integrated_lists = false   # the 4.6M-domain list index takes a while to build once; not what is tested

[tokenize]
vocab_size = 400
val_fraction = 0.15

[pretrain]
hidden_size = 32
num_layers = 1
num_heads = 2
intermediate_size = 64
seq_len = 32
batch_size = 4
max_steps = 12
eval_every = 4
eval_batches = 1
device = "cpu"
optim = { warmup_steps = 2, lr = 3e-3 }

[eval]
tasks = ["choices.jsonl:multiple_choice"]
limit = 10
"""


@pytest.fixture(scope="module")
def ablated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from gristmill.demo import write_demo_data

    run = tmp_path_factory.mktemp("abl")
    write_demo_data(run / "data", pages=PAGES)
    recipe = run / "recipe.toml"
    recipe.write_text(RECIPE)
    # A 25k-parameter model gains nothing from a second thread, and on a busy 2-core machine the
    # threads' spin-waits made scoring 10x slower (1.3 s vs 15 s measured): one thread, then restore.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = ablate.run_ablation(recipe, run, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    return run, results


def test_the_recipes_base_model_eval_runs_on_both_arms(ablated):
    run, r = ablated
    ev = r["eval"]
    task = "choices.jsonl:multiple_choice"
    assert ev["curated"][task]["n"] == ev["raw"][task]["n"] == 10
    raw = read_manifest(run / "ablation" / "eval-base-raw")
    assert [Path(i.path).parent.name for i in raw.inputs if i.role == "model"] == ["pretrain-raw"]
    assert task in (run / "ablation" / "ablation.md").read_text()


def texts(curate_dir: Path) -> list[str]:
    return [t for f in sorted(curate_dir.glob("documents-*.jsonl.gz")) for _, t in iter_documents(f)]


def test_both_arms_see_the_same_tokens_with_one_tokenizer(ablated):
    run, r = ablated
    work = run / "ablation"
    pre = {arm: read_manifest(work / name) for arm, name in (("curated", "pretrain"), ("raw", "pretrain-raw"))}
    assert pre["curated"].metrics["tokens_seen"] == pre["raw"].metrics["tokens_seen"] == 12 * 4 * 32
    assert pre["curated"].config == pre["raw"].config  # same model, seed, schedule
    tok = {arm: read_manifest(work / name) for arm, name in (("curated", "tokenize"), ("raw", "tokenize-raw"))}
    shas = {m.metrics["tokenizer"]["sha256"] for m in tok.values()}
    assert shas == {r["tokenizer_sha256"]}
    assert (work / "tokenize" / "tokenizer" / "tokenizer.json").read_bytes() == \
        (work / "tokenize-raw" / "tokenizer" / "tokenizer.json").read_bytes()
    # the raw arm is the same dump with the filters off: more documents, and the curated ones among them
    raw, cur = texts(work / "curate-raw"), texts(work / "curate")
    assert len(raw) > len(cur) > 0
    assert tok["raw"].metrics["train_tokens"] > tok["curated"].metrics["train_tokens"]
    assert r["arms"]["raw"]["documents"] == len(raw) and r["arms"]["curated"]["documents"] == len(cur)


def test_raw_arm_has_every_filter_off(ablated):
    run, _ = ablated
    m = read_manifest(run / "ablation" / "curate-raw")
    c = m.config
    assert not c["langid"]["enabled"] and not c["url_filter"]["enabled"]
    assert not c["dedup"]["exact"] and not c["dedup"]["near"]
    assert not any(h["enabled"] for h in c["heuristics"].values())
    assert {i.role for i in m.inputs} <= {"data", "truth"}  # no reference LM / quality model: those filters off
    dropped = m.metrics["dropped_by_stage"]
    assert not any(k in dropped for k in ("langid", "prefilter", "exact_dedup", "near_dedup", "gopher_repetition"))


def test_heldout_reference_is_unseen(ablated):
    run, r = ablated
    work = run / "ablation"
    held = ablate.read_reference(work / "reference" / "heldout.txt")
    rest = ablate.read_reference(work / "reference" / "train.txt")
    full = ablate.read_reference(run / "data" / "reference" / "clean.txt")
    assert sorted(held + rest) == sorted(full) and not set(held) & set(rest)
    # the filters' models were trained on the rest only
    for stage in ("reference-lm", "quality-model"):
        paths = {Path(i.path).name for i in read_manifest(work / stage).inputs if i.stage is None}
        assert "clean.txt" not in paths and "train.txt" in paths, (stage, paths)
    # no held-out document is inside either arm's text (checked here independently of ablate.contamination)
    for arm in ("curate", "curate-raw"):
        corpus = "\n".join(normalize_text(t) for t in texts(work / arm))
        assert not [h for h in held if normalize_text(h) in corpus]
    assert r["contaminated_heldout_documents"] == {"curated": 0, "raw": 0}


def test_both_models_scored_on_the_same_reference_tokens(ablated):
    run, r = ablated
    work = run / "ablation"
    held = ablate.read_reference(work / "reference" / "heldout.txt")
    ref = ablate.encode_reference(work / "tokenize", held)
    # the whole held-out text, in windows of seq_len + 1 with stride seq_len: every whole window scored
    assert r["eval_tokens"]["reference"] == (len(ref) - 1) // 32 * 32
    steps = [[row["step"] for row in r["curves"][arm]] for arm in ("curated", "raw")]
    assert steps[0] == steps[1] == [0, 4, 8, 12]  # the untrained model, then every eval step
    for arm in ("curated", "raw"):
        for row in r["curves"][arm]:
            assert set(row) == {"step", "reference", "curated_val", "raw_val"}
            assert all(math.isfinite(v) and v > 0 for k, v in row.items() if k != "step")
    # the curves' first point is the untrained model (same seed, same init): both arms score alike
    assert r["curves"]["curated"][0]["reference"] == pytest.approx(r["curves"]["raw"][0]["reference"], abs=1e-6)
    assert r["curated_wins"] == (r["final"]["curated"]["reference"] < r["final"]["raw"]["reference"])


def test_reference_loss_matches_a_forward_written_out(ablated):
    """The final reference loss: the saved model folder, every whole window of the held-out tokens,
    mean next-token cross-entropy computed here by hand."""
    from transformers import AutoModelForCausalLM

    run, r = ablated
    work = run / "ablation"
    ref = ablate.encode_reference(work / "tokenize", ablate.read_reference(work / "reference" / "heldout.txt"))
    n = (len(ref) - 1) // 32
    x = torch.tensor(np.stack([ref[i * 32:i * 32 + 33].astype(np.int64) for i in range(n)]))  # (n, 33)
    for arm, folder in (("curated", "pretrain"), ("raw", "pretrain-raw")):
        model = AutoModelForCausalLM.from_pretrained(work / folder / "model", dtype=torch.float32).eval()
        with torch.no_grad():
            logits = model(input_ids=x[:, :-1]).logits  # (n, 32, vocab)
        logp = torch.log_softmax(logits.double(), -1).gather(-1, x[:, 1:, None]).squeeze(-1)
        assert r["final"][arm]["reference"] == pytest.approx(-logp.mean().item(), abs=1e-4), arm


def test_final_checkpoint_is_the_saved_model(ablated):
    """The curves' last point scores the same weights as the model folder."""
    from safetensors.torch import load_file

    from gristmill.train.checkpoint import list_checkpoints, load_checkpoint

    run, _ = ablated
    d = run / "ablation" / "pretrain-raw"
    step, path = list_checkpoints(d / "checkpoints")[-1]
    ck = load_checkpoint(path).parts["model"]
    saved = load_file(d / "model" / "model.safetensors")
    assert step == 12
    for k, v in saved.items():
        assert torch.equal(ck[k], v), k


def test_report_plot_manifest_and_skip_on_rerun(ablated):
    run, r = ablated
    work = run / "ablation"
    m = read_manifest(work)
    assert m.stage == "ablate" and not verify(work)
    assert {o.path for o in m.outputs} == {"ablation.md", "ablation.png", "results.json"}
    md = (work / "ablation.md").read_text()
    assert r["verdict"] in md and "held-out clean reference" in md
    assert (work / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((work / "results.json").read_text())["id"] == m.id
    logs: list[str] = []
    again = ablate.run_ablation(run / "recipe.toml", run, log=logs.append)
    assert again == r
    assert any("[ablate] skipped" in s for s in logs)
    assert not any("running" in s for s in logs), logs


def test_recipe_without_pretrain_is_refused(tmp_path):
    (tmp_path / "r.toml").write_text('[run]\nstages = ["curate"]\n[inputs]\ncurate = { data = "x.warc.gz" }\n')
    with pytest.raises(ablate.runs.RunError, match="no pretrain stage"):
        ablate.run_ablation(tmp_path / "r.toml", tmp_path / "out")


def test_heldout_split_is_stable():
    cfg = ablate.AblateConfig(heldout_percent=30)
    docs = [f"document number {i} about a topic" for i in range(400)]
    held = [d for d in docs if ablate.is_heldout(d, cfg)]
    assert 0.2 < len(held) / len(docs) < 0.4
    # adding documents never moves an existing one across the split
    assert [d for d in docs[:100] if ablate.is_heldout(d, cfg)] == [d for d in held if docs.index(d) < 100]
    assert np.mean([ablate.is_heldout(d, ablate.AblateConfig(heldout_percent=30, seed=1)) for d in docs]) < 0.4


def test_cli_reports_a_missing_reference_in_one_line(tmp_path, capsys):
    from gristmill.cli import main

    (tmp_path / "r.toml").write_text(RECIPE)
    assert main(["ablate", str(tmp_path / "r.toml"), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gristmill: error:") and "clean.txt" in err and "--reference" in err
    assert "\n" not in err and not (tmp_path / "run" / "ablation").exists()


def test_unread_reference_reuses_the_runs_own_stages(tmp_path):
    """A held-out file the recipe never reads: the run's finished chain is the curated arm (not retrained)."""
    from gristmill.demo import write_demo_data
    from gristmill.stages import BUILTIN

    write_demo_data(tmp_path / "data", pages=PAGES)
    lines = (tmp_path / "data" / "reference" / "clean.txt").read_text().splitlines()
    (tmp_path / "data" / "ref-train.txt").write_text("\n".join(lines[: len(lines) * 4 // 5]) + "\n")
    (tmp_path / "heldout.txt").write_text("\n".join(lines[len(lines) * 4 // 5:]) + "\n")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.replace("{run}/data/reference/clean.txt", "{run}/data/ref-train.txt")
                      .replace("max_steps = 12", "max_steps = 4").replace("eval_every = 4", "eval_every = 2"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see `ablated`
    try:
        steps = ablate.runs.plan(ablate.runs.load_recipe(recipe), {s.name: s for s in BUILTIN}, run_dir=tmp_path,
                                 recipe_dir=tmp_path, until="pretrain")
        ablate.runs.execute(steps, log=lambda s: None)
        before = read_manifest(tmp_path / "pretrain").id
        logs: list[str] = []
        r = ablate.run_ablation(recipe, tmp_path, reference=tmp_path / "heldout.txt", log=logs.append)
    finally:
        torch.set_num_threads(threads)
    assert "[pretrain] skipped" in "\n".join(logs) and "[pretrain-raw] running" in "\n".join(logs)
    assert read_manifest(tmp_path / "pretrain").id == before
    raw = read_manifest(tmp_path / "pretrain-raw")
    assert raw.config == read_manifest(tmp_path / "pretrain").config
    assert raw.metrics["tokens_seen"] == r["tokens_seen"] == 4 * 4 * 32
    assert r["heldout_documents"] == len([x for x in lines[len(lines) * 4 // 5:] if x.strip()])
    assert r["arms"]["curated"]["stage_folder"] == f"{tmp_path.name}/pretrain"
    assert read_manifest(tmp_path / "ablation").stage == "ablate"
