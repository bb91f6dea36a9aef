"""Bad-input cases: each kind writes its broken file(s) into a folder, runs the gristmill command that reads them,
and is handled when the command fails with one clear line naming the file (no traceback), or curate keeps going
with ledger rows whose accounting holds (records read = kept + dropped) and an output that is not silently empty."""
from __future__ import annotations

import gzip
import json
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import HERE, RECIPE, Result, run_cli

sys.path.insert(0, str(HERE.parent))  # tests/: the curate fixtures' WARC writer
from curate_fixtures import english_page, html_response, write_warc  # noqa: E402


@dataclass
class Case:
    kind: str
    build: Callable[[Path, Path], tuple[list, list[str]]]  # (folder, finished run) -> (CLI args, names the message must show)
    needs_run: bool = False  # reads stages of a finished tiny run (RUN/curate, RUN/sft, ...)
    fast: bool = False  # also in the pytest file (seconds, no finished run needed)
    accept_success: Callable[[Path, Result], str | None] | None = None  # rc 0 is fine when this returns None


def clear_failure(r: Result, names: list[str]) -> str | None:
    """None when `r` is a clean refusal: non-zero exit, no traceback, a `gristmill:` line that names a file."""
    if r.rc == 0:
        return "exit 0"
    if "Traceback" in r.stderr:
        return "traceback: " + r.stderr.strip().splitlines()[-1][:300]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("gristmill:")]
    if not lines:
        return f"exit {r.rc} without a `gristmill:` message: {r.stderr.strip()[-300:]!r}"
    if names and not any(n in lines[-1] for n in names):
        return f"the message names none of {names}: {lines[-1][:300]}"
    return None


def curate_accounting(out: Path, r: Result) -> str | None:
    """For a curate run that finished: read = kept + dropped in the manifest and in the ledger, and every
    record has a ledger row; an empty output is fine only when the ledger says why each record went."""
    import pyarrow.parquet as pq

    from gristmill.manifests import read_manifest

    m = read_manifest(out)
    met = m.metrics
    read, kept, dropped = met["records_read"], met["kept"], sum(met["dropped"].values())
    if read != kept + dropped:
        return f"records read {read} != kept {kept} + dropped {dropped}"
    rows = pq.read_table(out / "ledger.parquet").num_rows
    if rows != read:
        return f"ledger has {rows} rows for {read} records read"
    if read == 0:
        return "no record read and no error: a silently empty output"
    return None


def _curate(folder: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> list:
    return ["curate", "--input", *inputs, "--out", folder / "out", *extra]


def _curate_ok(*reasons: str):
    """Curate finished: its accounting holds and the ledger drops at least one record for one of `reasons`."""
    def check(folder: Path, r: Result) -> str | None:
        if problem := curate_accounting(folder / "out", r):
            return problem
        from gristmill.manifests import read_manifest

        dropped = read_manifest(folder / "out").metrics["dropped"]
        if reasons and not any(k.startswith(reasons) for k in dropped):
            return f"no ledger row says {' or '.join(reasons)}: dropped {dropped}"
        return None
    return check


def _warc_bytes(folder: Path, pages: int = 6) -> tuple[Path, list[int]]:
    """A good gzipped WARC of `pages` English pages, and each record's byte offset."""
    rng = random.Random(0)
    p = folder / "good.warc.gz"
    offsets = write_warc(p, [html_response(f"https://example.com/{i}", english_page(rng, title=f"Page {i}"))
                             for i in range(pages)])
    return p, offsets


def truncated_gzip(folder: Path, run: Path):
    good, offsets = _warc_bytes(folder)
    data = good.read_bytes()
    bad = folder / "truncated.warc.gz"
    bad.write_bytes(data[: (offsets[3] + offsets[4]) // 2])  # cut in the middle of the 4th record's gzip member
    return _curate(folder, bad), ["truncated.warc.gz"]


def random_bytes_warc(folder: Path, run: Path):
    bad = folder / "random.warc.gz"
    bad.write_bytes(random.Random(1).randbytes(64 * 1024))
    return _curate(folder, bad), ["random.warc.gz"]


def empty_files(folder: Path, run: Path):
    for name in ("empty.warc.gz", "empty.jsonl"):
        (folder / name).write_bytes(b"")
    return _curate(folder, folder / "empty.warc.gz", folder / "empty.jsonl"), ["empty.warc.gz", "empty.jsonl"]


def nested_html(folder: Path, run: Path):
    depth = 10 * 1024 * 1024 // len("<div></div>")  # ~10 MB of nested tags
    html = "<html><body>" + "<div>" * depth + "deep" + "</div>" * depth + "</body></html>"
    rng = random.Random(2)
    bad = folder / "nested.warc.gz"
    write_warc(bad, [html_response("https://example.com/nested", html),
                     html_response("https://example.com/ok", english_page(rng))])
    return _curate(folder, bad), ["nested.warc.gz"]


def huge_document(folder: Path, run: Path):
    rng = random.Random(3)
    words = "the of and river stone market window garden silver forest candle cloud apple".split()
    para = " ".join(rng.choice(words) for _ in range(200)) + ".\n"
    text = para * (50 * 1024 * 1024 // len(para))  # one 50 MB document
    bad = folder / "huge.jsonl"
    bad.write_text(json.dumps({"id": "huge", "text": text}) + "\n" +
                   json.dumps({"id": "small", "text": english_page(rng)}) + "\n")
    return _curate(folder, bad), ["huge.jsonl"]


def undecodable_bytes(folder: Path, run: Path):
    rng = random.Random(4)
    good = json.dumps({"id": "a", "text": english_page(rng)}).encode()
    bad = folder / "undecodable.jsonl"
    bad.write_bytes(good + b"\n" + b'{"id": "b", "text": "caf\xe9 \xff\xfe broken"}\n' + b"\xc3\x28\xa0\xa1\n")
    return _curate(folder, bad), ["undecodable.jsonl"]


def broken_jsonl(folder: Path, run: Path):
    rng = random.Random(5)
    bad = folder / "broken.jsonl"
    bad.write_text("\n".join([json.dumps({"id": "a", "text": english_page(rng)}), '{"id": "b", "text": "unfinished',
                              json.dumps({"id": "c", "text": 5}), json.dumps([1, 2, 3]), json.dumps("just a string"),
                              json.dumps({"id": "d"}), json.dumps({"id": {"x": 1}, "text": english_page(rng)})]) + "\n")
    return _curate(folder, bad), ["broken.jsonl"]


def preference_missing_fields(folder: Path, run: Path):
    bad = folder / "pairs.jsonl"
    bad.write_text("\n".join([json.dumps({"prompt": "Say hi.", "chosen": "hi"}),
                              json.dumps({"prompt": "Say no.", "rejected": "yes"}),
                              json.dumps({"chosen": "a", "rejected": "b"})]) + "\n")
    return ["align", "reward", "--model", run / "sft", "--data", bad, "--out", folder / "out"], ["pairs.jsonl"]


def sft_all_truncated(folder: Path, run: Path):
    bad = folder / "long.jsonl"
    long = " ".join(["word"] * 400)  # every prompt is longer than max_length: nothing left to learn from
    bad.write_text("".join(json.dumps({"instruction": f"{long} {i}", "response": "ok"}) + "\n" for i in range(8)))
    return ["align", "sft", "--model", run / "pretrain", "--data", bad, "--out", folder / "out",
            "--config", RECIPE, "--set", "sft.max_length=32"], ["long.jsonl", "max_length"]


def _all_truncated_recorded(folder: Path, r: Result) -> str | None:
    """sft's truncation never empties an example (the prompt loses its start, the answer keeps its first token:
    align/chat.py truncate), so a run on all-too-long examples may train; then the manifest must count each one."""
    from gristmill.manifests import read_manifest

    mt = read_manifest(folder / "out").metrics
    n = mt["examples_train"] + mt["examples_eval"] + mt["skipped_no_assistant_tokens"]
    return None if n == 8 and mt["truncated"] == 8 else f"8 over-long examples, the manifest counts {mt['truncated']} truncated"


def sft_nothing_to_learn(folder: Path, run: Path):
    bad = folder / "empty-answers.jsonl"
    bad.write_text("".join(json.dumps({"instruction": f"Say {i}.", "response": ""}) + "\n" for i in range(8)))
    return ["align", "sft", "--model", run / "pretrain", "--data", bad, "--out", folder / "out", "--config", RECIPE,
            "--set", "sft.data.on_error=skip"], ["empty-answers.jsonl"]


def tokenizer_not_a_tokenizer(folder: Path, run: Path):
    tok = folder / "not-a-tokenizer"
    tok.mkdir()
    (tok / "tokenizer.json").write_text('{"this": "is not a tokenizer"}')
    (tok / "README").write_text("hello")
    return ["tokenize", "--input", run / "curate", "--tokenizer", tok, "--out", folder / "out"], ["not-a-tokenizer"]


def model_missing_shard(folder: Path, run: Path):
    """The pretrained model re-saved as two safetensors shards with their index, then the second shard deleted."""
    from safetensors.torch import load_file, save_file

    model = folder / "model"
    shutil.copytree(run / "pretrain" / "model", model)
    tensors = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in shards.items():
        save_file({k: tensors[k].contiguous() for k in keys}, model / shard, metadata={"format": "pt"})
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}))
    (model / "model-00002-of-00002.safetensors").unlink()
    return ["align", "sft", "--model", model, "--data", run / "data" / "sft" / "train.jsonl", "--out", folder / "out",
            "--config", RECIPE], ["model-00002-of-00002.safetensors"]


def reward_other_tokenizer(folder: Path, run: Path):
    """A reward stage trained on a model with another vocabulary (tests' tiny ChatML base): ppo must refuse it or
    say in its manifest that responses are re-encoded in the reward model's own tokenizer."""
    from align_helpers import reward_config, tiny_base, write_jsonl, pair_records
    from gristmill.align.reward import run_reward

    base = tiny_base(folder / "other-base")
    pairs = write_jsonl(folder / "pairs.jsonl", pair_records(32))
    run_reward(reward_config(max_steps=4), {"model": [base], "data": [pairs]}, folder / "other-rm")
    return ["align", "ppo", "--model", run / "sft", "--data", run / "data" / "prompts" / "train.jsonl",
            "--reward", folder / "other-rm", "--out", folder / "out", "--config", RECIPE], ["other-rm"]


def _reencoded(folder: Path, r: Result) -> str | None:
    from gristmill.manifests import read_manifest

    m = read_manifest(folder / "out")
    how = m.metrics.get("reward_tokenizer")
    return None if how == "re-encoded from text" else f"ppo ran with another tokenizer's reward model: {how!r}"


def _recipe(folder: Path, text: str) -> list:
    p = folder / "recipe.toml"
    p.write_text(text)
    return ["run", p, "--out", folder / "run"]


def recipe_syntax_error(folder: Path, run: Path):
    return _recipe(folder, '[run]\nstages = ["curate"\n[curate]\nworkers = \n'), ["recipe.toml"]


def recipe_unknown_stage(folder: Path, run: Path):
    _warc_bytes(folder)[0].rename(folder / "x.warc.gz")  # a real input, so that the stage name is the only fault
    return _recipe(folder, '[run]\nstages = ["curate", "polish"]\n[inputs]\ncurate = { data = "x.warc.gz" }\n'), ["polish"]


def recipe_cycle(folder: Path, run: Path):
    return _recipe(folder, '[run]\nstages = ["tokenize", "pretrain"]\n[inputs]\n'
                           'tokenize = { data = "@pretrain" }\npretrain = { data = "@tokenize" }\n'), ["pretrain"]


def missing_input(folder: Path, run: Path):
    return _curate(folder, folder / "nowhere" / "*.warc.gz"), ["nowhere"]


CASES = [
    Case("truncated gzip", truncated_gzip, fast=True, accept_success=_curate_ok("truncated")),
    Case("random bytes named .warc.gz", random_bytes_warc, accept_success=_curate_ok("malformed", "truncated")),
    Case("empty files", empty_files, fast=True, accept_success=_curate_ok("empty_file")),
    Case("10 MB of nested HTML tags", nested_html, accept_success=_curate_ok("extract", "too_large")),
    Case("a 50 MB single document", huge_document, accept_success=_curate_ok("too_large")),
    Case("undecodable bytes", undecodable_bytes, accept_success=_curate_ok("bad_json", "undecodable", "bad_utf8")),
    Case("JSONL with broken lines and wrong types", broken_jsonl,
         accept_success=_curate_ok("bad_json", "missing_text", "text_not_string")),
    Case("a preference file with missing fields", preference_missing_fields, needs_run=True),
    Case("an SFT file whose every example is truncated", sft_all_truncated, needs_run=True,
         accept_success=_all_truncated_recorded),
    Case("an SFT file with nothing to train on (every answer empty, bad lines skipped)", sft_nothing_to_learn,
         needs_run=True),
    Case("a tokenizer path that is not a tokenizer", tokenizer_not_a_tokenizer, needs_run=True),
    Case("a model folder with a missing shard", model_missing_shard, needs_run=True),
    Case("a reward model of another tokenizer", reward_other_tokenizer, needs_run=True, accept_success=_reencoded),
    Case("a recipe with a syntax error", recipe_syntax_error, fast=True),
    Case("a recipe with an unknown stage", recipe_unknown_stage, fast=True),
    Case("a recipe with a cycle", recipe_cycle, fast=True),
    Case("an input pattern that matches nothing", missing_input),
]


def run_case(case: Case, folder: Path, run: Path | None) -> str | None:
    """None when the case is handled; else what went wrong (with the command's last output)."""
    folder.mkdir(parents=True, exist_ok=True)
    args, names = case.build(folder, run)
    r = run_cli(*args, cwd=folder)
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("gristmill:")]
    (folder / "said.txt").write_text(f"exit {r.rc} in {r.seconds:.1f} s\n" +
                                     (said[-1] if said else "" if r.rc == 0 else r.stderr[-3000:]))
    if r.rc == 0 and case.accept_success is not None:
        return case.accept_success(folder, r)
    return clear_failure(r, names)


def bad_input_suite(work: Path, run: Path | None, *, only_fast: bool = False, log=print) -> tuple[int, int, list[str]]:
    """(kinds handled, kinds tried, failure lines)."""
    handled, tried, failures = 0, 0, []
    for i, case in enumerate(CASES):
        if (only_fast and not case.fast) or (case.needs_run and run is None):
            continue
        tried += 1
        try:
            problem = run_case(case, work / f"bad{i:02d}", run)
        except Exception as e:  # the harness itself must not stop the suite: count it as not handled
            problem = f"harness error: {type(e).__name__}: {e}"
        said = (work / f"bad{i:02d}" / "said.txt")
        said = said.read_text().splitlines() if said.is_file() else ["?"]
        log(f"  bad input: {case.kind}: {'handled' if problem is None else 'NOT HANDLED: ' + problem} "
            f"({said[0]}: {said[-1][:200]})")
        handled += problem is None
        if problem is not None:
            failures.append(f"{case.kind}: {problem}")
    return handled, tried, failures
