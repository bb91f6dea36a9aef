"""The run report: sections, figures from the manifests, plots, links, samples joined by prompt, byte-identical when regenerated or moved, missing stages named, its own and data folders not."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from gristmill.manifests import check_input, new_manifest, output_record, write_manifest
from gristmill.runreport import PLOTS_DIR, find_stages, write_run_report

SECTIONS = ["## Stages", "## Curation", "## Tokens", "## Pretraining", "## Supervised fine-tuning", "## Reward model",
            "## Preference optimisation (DPO family)", "## Reinforcement learning (PPO / GRPO / RLOO)",
            "## Aligned models against SFT", "## Benchmarks", "## Sample generations", "## Lineage"]
Q = "What is 2 + 2?"  # the prompt every align stage answered


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def samples(rows: list[tuple[str, str, str, bool | None, bool | None]]) -> str:
    return jsonl([{"prompt": p, "answer": "4" if p == Q else None, "task": None, "before": b, "after": a,
                   "correct_before": cb, "correct_after": ca} for p, b, a, cb, ca in rows])


def stage(run: Path, name: str, kind: str, minute: int, *, inputs: dict[str, Path] | None = None,
          metrics: dict | None = None, files: dict[str, tuple[str, str]] | None = None,
          events: list[dict] | None = None) -> Path:
    """A finished stage folder RUN/name written with the manifest writer: `files` = {path: (kind, text)}."""
    d = run / name
    d.mkdir(parents=True)
    recs = [check_input(p, role=role, relative_to=d) for role, p in (inputs or {}).items()]
    m = new_manifest(kind, {"name": name}, recs, created=f"2026-12-01T10:{minute:02d}:00Z")
    for path, (_, text) in (files or {}).items():
        (d / path).write_text(text)
    m.outputs = [output_record(d, path, k) for path, (k, _) in (files or {}).items()]
    m.metrics, m.events = metrics or {}, events or []
    write_manifest(d, m)
    return d


def fake_run(run: Path) -> Path:
    """A run of every stage kind with hand-written figures, metrics logs and samples; grpo is a second ppo stage
    (finished after ppo, named so that it sorts before it); `sft-2` an unfinished folder; `data` raw input."""
    (run / "data").mkdir(parents=True)
    (run / "data" / "web.jsonl").write_text('{"text": "a page"}\n')
    report = lambda s: ("report", f"# {s}\n")  # noqa: E731 - a per-stage report.md
    cur = stage(run, "curate", "curate", 1, inputs={"data": run / "data" / "web.jsonl"}, files={"report.md": report("curate")},
                metrics={"records_read": 10, "kept": 4, "documents_bytes": 1234,
                         "dropped": {"language": 3, "exact_duplicate": 2, "quality_low": 1},
                         "funnel": [{"step": "input", "documents": 10, "bytes": 9000},
                                    {"step": "langid", "documents": 7, "bytes": 6000},
                                    {"step": "exact_dedup", "documents": 4, "bytes": 1234}]})
    tok = stage(run, "tokenize", "tokenize", 2, inputs={"data": cur}, files={"report.md": report("tokenize")},
                metrics={"vocab_size": 512, "dtype": "uint16", "train_tokens": 777, "train_documents": 3,
                         "val_tokens": 55, "val_documents": 1, "bytes_per_token": 1.4823,
                         "tokenizer": {"source": "trained"}, "shards": {"train-00000.bin": {}, "val-00000.bin": {}}})
    rows = [{"step": i, "loss": 5.0 - 0.1 * i, "lr": 1e-3, "grad_norm": 1.0} for i in range(1, 11)]
    rows[4]["eval_loss"] = 4.75
    pre = stage(run, "pretrain", "pretrain", 3, inputs={"data": tok},
                files={"metrics.jsonl": ("metrics", jsonl(rows)), "report.md": report("pretrain")},
                metrics={"params": 12345, "steps": 10, "tokens_seen": 2560, "final_train_loss": 4.05,
                         "val_loss": 4.3125, "val_perplexity": 74.6293, "spikes_skipped": 1, "rollbacks": 0},
                events=[{"step": 7, "kind": "spike", "action": "skip", "reason": "grad norm z=7.5 > 6"}])
    sft_rows = [{"step": i, "loss": 2.0 / i, "lr": 1e-3, "grad_norm": 0.5} for i in range(1, 6)]
    sft_rows[-1] |= {"eval_loss": 1.25, "eval_token_accuracy": 0.6}
    sft = stage(run, "sft", "sft", 4, inputs={"model": pre},
                files={"metrics.jsonl": ("metrics", jsonl(sft_rows)), "report.md": report("sft"),
                       "samples.jsonl": ("samples", samples([(Q, "fish", "4", False, True),
                                                             ("Name a colour.", "the the", "blue", None, None)]))},
                metrics={"eval_loss_before": 7.5, "eval_loss": 1.25, "eval_token_accuracy_before": 0.05,
                         "eval_token_accuracy": 0.6, "answers_checked": 1, "answer_accuracy_before": 0.0,
                         "answer_accuracy": 1.0})
    rm = stage(run, "reward", "reward", 5, inputs={"model": sft}, files={"report.md": report("reward")},
               metrics={"pairs_eval": 20, "eval_accuracy": 0.85, "eval_margin": 2.5, "length_spearman": -0.4125,
                        "accuracy_chosen_shorter": 0.9, "pairs_chosen_shorter": 10})
    dpo_rows = [{"step": i, "loss": 0.7, "lr": 1e-4, "grad_norm": 1.0, "train_margin": 0.1 * i,
                 "train_logp_chosen": -10.0, "train_logp_rejected": -10.0 - i, "train_accuracy": 0.5} for i in range(1, 5)]
    stage(run, "dpo", "dpo", 6, inputs={"model": sft, "reward": rm},
          files={"metrics.jsonl": ("metrics", jsonl(dpo_rows)), "report.md": report("dpo"),
                 "samples.jsonl": ("samples", samples([(Q, "4", "dpo says 4", True, True)]))},
          metrics={"loss": "dpo", "eval_accuracy": 0.7, "eval_margin": 1.2345, "eval_logp_chosen": -11.5,
                   "eval_logp_rejected": -19.25, "kl_to_reference": 0.4321, "judged_prompts": 20, "win_rate": 0.925,
                   "win_rate_not_longer": 0.9, "reward_before": 1.0, "reward_after": 2.0, "answers_checked": 0})
    for name, minute, score, after in (("ppo", 7, 3.5, "ppo says 4"), ("grpo", 8, 0.75, "5")):
        rl_rows = [{"step": i, "score": score * i / 3, "kl": 0.1 * i, "response_tokens": 10 - i} for i in range(1, 4)]
        stage(run, name, "ppo", minute, inputs={"model": sft, "reward": rm},
              files={"metrics.jsonl": ("metrics", jsonl(rl_rows)), "report.md": report(name),
                     "samples.jsonl": ("samples", samples([(Q, "4", after, True, after != "5")]))},
              metrics={"advantage": "gae" if name == "ppo" else "grpo", "reward": "model", "iterations": 3,
                       "first": {"score": score / 3}, "last": {"score": score, "kl": 0.3}, "kl_to_sft": 0.2468,
                       "judged_prompts": 20, "win_rate": 0.8 if name == "ppo" else 0.35, "answers_checked": 1,
                       "answer_accuracy_before": 1.0, "answer_accuracy": 1.0 if name == "ppo" else 0.0,
                       "sampled_accuracy_before": 0.5, "sampled_accuracy": 0.625})
    for name, model, minute, acc in (("eval-base", pre, 9, 0.25), ("eval-sft", sft, 10, 0.5)):
        tasks = {"core.copa": {"metric": "acc_mean", "value": acc + 0.1, "stderr": 0.05, "n": 100,
                               "random_baseline": 0.5, "centered": 2 * (acc + 0.1) - 1},
                 "answers.jsonl:generative": {"metric": "exact_match", "value": acc, "stderr": 0.04, "n": 100,
                                              "random_baseline": 0.0, "centered": acc}}
        core = {"value": 2 * (acc + 0.1) - 1, "stderr": 0.1, "tasks": 1, "of": 22}
        stage(run, name, "eval", minute, inputs={"model": model}, files={"report.md": report(name)},
              metrics={"model": f"{model.name} (x)", "tasks": tasks, "core": core})
    (run / "sft-2" / "checkpoints").mkdir(parents=True)  # a stage that stopped before its manifest
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """The fake run and its report, composed once for the tests that only read them (copy it to change it)."""
    run = fake_run(tmp_path_factory.mktemp("built") / "run")
    return run, write_run_report(run).read_text()


def copy_of(built: tuple[Path, str], dest: Path) -> Path:
    shutil.copytree(built[0], dest)
    return dest


def cells(report: str, first: str, section: str | None = None) -> list[str]:
    """The cells of the table row whose first cell is `first` (in `section` when given, e.g. "## Tokens")."""
    if section is not None:
        report = report.split(section + "\n", 1)[1].split("\n## ", 1)[0]
    line = next(ln for ln in report.splitlines() if ln.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def test_report_has_every_section_and_the_manifests_figures(built):
    text = built[1]
    assert [ln for ln in text.splitlines() if ln.startswith("## ")] == SECTIONS
    assert "could not be composed" not in text and "No finished" not in text
    # stages in lineage order; ppo finished before grpo, so it comes first although its name sorts after
    order = re.findall(r"^\| `([\w-]+)` \| ", text.split("## Curation")[0], re.M)
    assert order == ["curate", "tokenize", "pretrain", "sft", "reward", "dpo", "ppo", "grpo", "eval-base", "eval-sft",
                     "sft-2"]
    assert "unfinished or failed" in cells(text, "`sft-2`")[4]
    assert "Records read **10**, kept **4** (40.0 %), dropped **6**" in text
    assert cells(text, "language") == ["language", "3", "50.0 %"]  # the top drop reason, 3 of 6
    assert cells(text, "`tokenize`", "## Tokens")[1:7] == ["512", "trained", "uint16", "777 / 3", "55 / 1", "1.482"]
    assert cells(text, "validation perplexity") == ["validation perplexity", "74.629"]
    assert cells(text, "7") == ["7", "skip", "grad norm z=7.5 > 6"]  # the spike event
    assert cells(text, "eval token accuracy") == ["eval token accuracy", "5.0 %", "60.0 %"]
    assert cells(text, "`reward`", "## Reward model")[2:5] == ["85.0 %", "2.500", "-0.412"]
    assert cells(text, "`dpo`", "## Preference optimisation (DPO family)")[3:8] == ["70.0 %", "1.234", "n/a / n/a", "-11.50 / -19.25", "0.432"]
    assert cells(text, "`ppo` (ppo)")[1:3] == ["20", "80.0 %"]
    assert cells(text, "`grpo` (ppo)")[2] == "35.0 %" and cells(text, "`grpo` (ppo)")[6] == "100.0 % → 0.0 % (1)"
    assert cells(text, "`dpo` (dpo)")[2] == "92.5 %"
    # models x tasks: score ± stderr (points), the random baseline row, CORE with its task count
    assert cells(text, "core.copa", "## Benchmarks") == ["core.copa", "acc_mean", "100", "50.0", "35.0 ± 5.0",
                                                         "60.0 ± 5.0"]
    assert cells(text, "**CORE** (centred, mean)", "## Benchmarks")[4:] == ["-0.300 (1/22 tasks)", "0.200 (1/22 tasks)"]


def test_samples_are_joined_by_prompt_base_sft_then_each_aligned_model(built):
    text = built[1]
    header = cells(text, "prompt")
    assert header == ["prompt", "expected", "base", "SFT", "dpo", "ppo", "grpo"]
    assert cells(text, Q) == [Q, "4", "fish ✗", "4 ✓", "dpo says 4 ✓", "ppo says 4 ✓", "5 ✗"]
    # a prompt only the SFT stage answered: its row says so instead of borrowing an answer
    assert cells(text, "Name a colour.") == ["Name a colour.", "—", "the the", "blue", "—", "—", "—"]


def test_plots_exist_and_every_link_resolves(built):
    run, text = built
    links = re.findall(r"\]\(([^)]+)\)", text)
    pngs = [ln for ln in links if ln.endswith(".png")]
    assert sorted(Path(p).name for p in pngs) == ["benchmarks.png", "curate-funnel.png", "dpo-preferences.png",
                                                  "pretrain-training.png", "rl.png", "sft-training.png"]
    for link in links:
        assert (run / link).is_file(), link
    for p in pngs:
        assert (run / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {ln for ln in links if ln.endswith("report.md")} == {
        f"{s}/report.md" for s in ("curate", "tokenize", "pretrain", "sft", "reward", "dpo", "ppo", "grpo", "eval-base",
                                   "eval-sft")}
    assert sorted(p.name for p in (run / PLOTS_DIR).iterdir()) == sorted(Path(p).name for p in pngs)


def test_regenerated_and_moved_runs_give_the_same_bytes(built, tmp_path):
    run, first = built
    plots = {p.name: p.read_bytes() for p in (run / PLOTS_DIR).iterdir()}
    moved = tmp_path / "elsewhere" / "copied-run"
    shutil.copytree(copy_of(built, tmp_path / "step"), moved)
    shutil.rmtree(tmp_path / "step")  # the moved run is all there is to read
    assert write_run_report(moved).read_text() == first  # regenerated in another place: the same bytes
    assert {p.name: p.read_bytes() for p in (moved / PLOTS_DIR).iterdir()} == plots
    assert str(run.parent) not in first and str(tmp_path) not in (moved / "report.md").read_text()


def test_a_missing_or_changed_stage_is_named_not_a_crash(built, tmp_path):
    run = copy_of(built, tmp_path / "run")
    shutil.rmtree(run / "reward")
    shutil.rmtree(run / "dpo")
    (run / "ppo" / "manifest.json").write_text("{not json")
    text = write_run_report(run).read_text()
    assert [ln for ln in text.splitlines() if ln.startswith("## ")] == SECTIONS
    assert "could not be composed" not in text
    assert "No finished `reward` stage in this run" in text and "No finished `dpo` stage in this run" in text
    assert "- `grpo` read `reward`, which is not a finished stage of this run any more." in text
    assert "manifest.json unreadable" in cells(text, "`ppo`")[4] and str(tmp_path) not in text
    assert "**(missing now)**" in text
    assert not (run / PLOTS_DIR / "dpo-preferences.png").exists()  # a plot of a stage that is gone goes too


def stage_rows(report: str) -> list[str]:
    """The folder column of the report's Stages table."""
    return re.findall(r"^\| `([\w.-]+)` \| ", report.split("## Stages", 1)[1].split("\n## ", 1)[0], re.M)


def test_the_reports_own_folder_and_input_data_are_not_stages(built, tmp_path):
    # A run whose stages draw no plot: the second report finds its own report-plots/ empty (empty folders are
    # how a stage that failed early looks) and must not list it.
    run = tmp_path / "tok-only"
    stage(run, "tokenize", "tokenize", 1, metrics={"vocab_size": 512})
    write_run_report(run)
    assert (run / PLOTS_DIR).is_dir() and not any((run / PLOTS_DIR).iterdir())
    assert stage_rows(write_run_report(run).read_text()) == ["tokenize"]
    assert find_stages(run)[1] == []
    # The run's input data holds what a running stage would (a tasks/ folder, a report.md of the user's): a
    # finished stage reads raw input from it, so it is data, not an unfinished stage. Folders that look like
    # stages are still named.
    run = copy_of(built, tmp_path / "run")
    (run / "data" / "tasks").mkdir()
    (run / "data" / "report.md").write_text("# where this data came from\n")
    for p in (run / PLOTS_DIR).iterdir():
        p.unlink()
    stages, broken = find_stages(run)
    assert [s.name for s in broken] == ["sft-2"] and "data" not in [s.name for s in stages]
    (run / "tokenize" / "manifest.json").unlink()  # a stage's folder never hides behind a raw input
    (run / "notes").mkdir()  # an empty folder: a stage that failed before writing anything
    assert [s.name for s in find_stages(run)[1]] == ["notes", "sft-2", "tokenize"]
    rows = stage_rows(write_run_report(run).read_text())
    assert PLOTS_DIR not in rows and "data" not in rows and rows[-3:] == ["notes", "sft-2", "tokenize"]


def test_stage_reports_print_paths_normalised(tmp_path):
    from gristmill.manifests.inputs import report_path

    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    (tmp_path / "models" / "base").mkdir(parents=True)
    assert report_path(run / "sft" / ".." / "pretrain" / "model", run / "sft") == "../pretrain/model"
    assert report_path(run / "data" / "." / "x.jsonl", run / "sft") == "../data/x.jsonl"
    assert report_path(tmp_path / "recipes" / ".." / "models" / "base", run / "sft") == str(tmp_path / "models" / "base")


def test_cli_report_command(built, tmp_path, capsys):
    from gristmill.cli import main

    run = copy_of(built, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"run report: {run / 'report.md'}"
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "no stage folders" in capsys.readouterr().err


def test_gristmill_run_writes_the_report_also_when_a_stage_fails(tmp_path, capsys):
    from gristmill.cli import main

    (tmp_path / "clean.txt").write_text("\n".join(f"the cat {w} on the mat." for w in ("sat", "ran", "slept") * 20))
    (tmp_path / "empty.txt").write_text("")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nstages = ["reference-lm", "ref2"]\nuses = { ref2 = "reference-lm" }\n[inputs]\n'
                      'reference-lm = { text = "clean.txt" }\nref2 = { text = "empty.txt" }\n')
    run = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 1  # ref2 has no text: the run fails there
    assert f"run report: {run / 'report.md'}" in capsys.readouterr().out
    text = (run / "report.md").read_text()
    assert cells(text, "`reference-lm`")[4] == "finished"
    assert "unfinished or failed" in cells(text, "`ref2`")[4]
    assert "No finished `curate` stage in this run" in text


def test_sample_rows_check_each_answer():
    from gristmill.align.judge import HeldOutPrompt
    from gristmill.align.stage import sample_rows

    prompts = [HeldOutPrompt([{"role": "user", "content": "Say 7."}], answer="7"),
               HeldOutPrompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}])]
    rows = sample_rows(prompts, ["7", "hello"], ["eight", "hi"])
    assert rows == [{"prompt": "Say 7.", "answer": "7", "task": None, "before": "7", "after": "eight",
                     "correct_before": True, "correct_after": False},
                    {"prompt": "Hi.", "answer": None, "task": None, "before": "hello", "after": "hi",
                     "correct_before": None, "correct_after": None}]


def test_ablation_verdict_joins_the_report_after_pretraining(built, tmp_path):
    run = copy_of(built, tmp_path / "run")
    final = {"curated": {"reference": 1.25, "curated_val": 1.5, "raw_val": 5.0},
             "raw": {"reference": 4.5, "curated_val": 4.25, "raw_val": 3.0}}
    stage(run, "ablation", "ablate", 9, files={"results.json": ("metrics", json.dumps({"final": final})),
                                               "ablation.png": ("plot", "not really a png"),
                                               "ablation.md": ("report", "# ablation\n")},
          metrics={"verdict": "curated text wins on the held-out clean reference", "curated_wins": True, "final": final})
    text = write_run_report(run).read_text()
    heads = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert heads.index("## Curation ablation") == heads.index("## Pretraining") + 1
    assert "**curated text wins on the held-out clean reference.**" in text
    assert cells(text, "held-out clean reference", "## Curation ablation") == ["held-out clean reference", "1.2500", "4.5000"]
    assert cells(text, "raw val split", "## Curation ablation") == ["raw val split", "5.0000", "3.0000"]
    assert "[ablation/ablation.md](ablation/ablation.md)" in text and "(ablation/ablation.png)" in text
    assert "## Curation ablation" not in built[1]  # a run without one has no such section
