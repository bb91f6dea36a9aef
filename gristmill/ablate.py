"""The curation ablation: one model, token budget and tokenizer on raw extracted text vs curated text, judged on held-out clean text.

`gristmill ablate RECIPE.toml --out DIR` runs, in DIR/ablation/, the recipe's stages up to its
pretrain stage (the curated arm) plus three more built from them (the raw arm):

    <curate>-raw    the same curate inputs and readers / extraction, every filter and dedup off
    <tokenize>-raw  the raw documents encoded with the curated arm's tokenizer (input role "tokenizer")
    <pretrain>-raw  the same [pretrain] section as the curated arm: model, seed, steps x batch x seq_len

Both pretrains save a checkpoint at every evaluation step, and each checkpoint is scored on the same
held-out clean text, on the curated val split and on the raw val split. The held-out text is a stable
hash split of the clean reference documents (default: the recipe's reference-lm text): its documents
are taken out of every input of the recipe that reads that file (the reference LM and the quality
classifier see only the rest), so neither arm's filters nor its training data have seen them.
`--reference FILE` that no stage of the recipe reads is held out whole; then nothing needs retraining
on the curated side: the curated arm is the run's own chain (RUN/<stage>, skipped when finished, its
pretrain section as the recipe has it) and only the raw arm runs, in RUN/<stage>-raw.

Off in the raw arm: URL blocklists, language ID (and its pre-extraction check), the Gopher / C4 /
FineWeb heuristics, the perplexity and quality filters (no reference / quality model input), exact
and near dedup, decontamination. Kept: reading the records (non-HTML, broken and non-200 records
carry no text) and boilerplate removal, so "raw" is the extracted text of every page.

The stages run through the run planner (a finished one is skipped); the comparison itself is a
stage folder with its manifest (stage "ablate"): ablation.md, ablation.png, results.json.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable

from gristmill import config as cfg
from gristmill import runs
from gristmill.manifests import (RAW, atomic_open, atomic_write_text, begin_stage, output_record, read_manifest,
                                 write_manifest)
from gristmill.stages import BUILTIN

STAGE = "ablate"
FOLDER = "ablation"  # DIR/ablation/: the derived run's stage folders and the comparison

# Every per-document filter and dedup step of curate, off; readers and extraction stay as configured.
RAW_CURATE = {
    "url_filter": {"enabled": False},
    "langid": {"enabled": False},
    "heuristics": {name: {"enabled": False} for name in ("gopher_repetition", "gopher_quality", "c4", "fineweb")},
    "dedup": {"exact": False, "near": False},
}
RAW_ROLES = ("data", "truth")  # the raw arm's curate inputs: the dump (and its ground truth, read by the report only)
EXPECT = {"curated": ("pretrain",), "raw": ("pretrain",), "curated_tokens": ("tokenize",),
          "raw_tokens": ("tokenize",), "reference": (RAW,), "curated_eval": ("eval",), "raw_eval": ("eval",)}


@dataclasses.dataclass(kw_only=True)
class AblateConfig:
    #: Percent of the reference documents held out as the clean evaluation text (a stable hash split).
    heldout_percent: float = 20.0
    #: Seed of that split.
    seed: int = 0
    #: Windows (of pretrain.seq_len + 1 tokens) scored per val split per checkpoint, spread evenly;
    #: the held-out reference is scored whole.
    val_windows: int = 64

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout_percent <= 100.0:
            raise cfg.ConfigError(f"ablate --heldout-percent {self.heldout_percent}: give a share in (0, 100], e.g. 20")
        if self.val_windows < 1:
            raise cfg.ConfigError(f"ablate --val-windows {self.val_windows}: must be >= 1, e.g. 64")


# ---------------------------------------------------------------------------------------------
# the held-out reference


def read_reference(path: Path) -> list[str]:
    """Documents of a clean text file: .txt one per line, .jsonl one {"text": ...} per line."""
    docs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    text = json.loads(line).get("text")
                except (json.JSONDecodeError, AttributeError):
                    text = None
                if not isinstance(text, str):
                    raise runs.RunError(f"{path}: line {lineno}: expected {{\"text\": ...}}; give --reference a .txt "
                                        "(one document per line) or .jsonl file")
                docs.append(text)
            else:
                docs.append(line.rstrip("\n"))
    if not docs:
        raise runs.RunError(f"{path}: no documents; --reference needs clean text, one document per line")
    return docs


def is_heldout(text: str, config: AblateConfig) -> bool:
    h = hashlib.sha256(f"{config.seed}\0ablate\0{text}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < config.heldout_percent / 100.0


def split_reference(source: Path, out: Path, config: AblateConfig, *, used_by_recipe: bool) -> tuple[Path, Path | None]:
    """Write out/heldout.txt (and out/train.txt, the rest, when the recipe reads `source`); a document
    is held out by a hash of its text, so the split does not move when documents are added."""
    docs = read_reference(source)
    held = [d for d in docs if not used_by_recipe or is_heldout(d, config)]
    rest = [d for d in docs if used_by_recipe and not is_heldout(d, config)]
    if not held or (used_by_recipe and not rest):
        raise runs.RunError(f"{source}: holding out {config.heldout_percent}% of its {len(docs)} documents leaves "
                            f"{len(held)} held out and {len(rest)} for the recipe; change --heldout-percent")
    out.mkdir(parents=True, exist_ok=True)
    _write_if_changed(out / "heldout.txt", "".join(d.replace("\n", " ") + "\n" for d in held))
    if not used_by_recipe:
        return out / "heldout.txt", None
    _write_if_changed(out / "train.txt", "".join(d.replace("\n", " ") + "\n" for d in rest))
    return out / "heldout.txt", out / "train.txt"


def _write_if_changed(path: Path, text: str) -> None:
    # An unchanged file keeps its mtime, so the hash cache (and the stages reading it) stay as they are.
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


# ---------------------------------------------------------------------------------------------
# the derived recipe


def _kind(recipe: dict[str, Any], name: str) -> str:
    return recipe.get("run", {}).get("uses", {}).get(name, name)


def _upstream(recipe: dict[str, Any], step: str, want: str, recipe_path: Path) -> str:
    """The step named by `step`'s data input ('@name'), which must be a `want` stage."""
    value = recipe.get("inputs", {}).get(step, {}).get("data")
    if not (isinstance(value, str) and value.startswith("@") and _kind(recipe, value[1:]) == want):
        raise runs.RunError(f"{recipe_path}: [inputs] {step}.data = {value!r}; the ablation needs one "
                            f"'@<{want} stage>' there (a single source, made by this recipe)")
    return value[1:]


def _resolve(value: Any, run_dir: Path, recipe_dir: Path) -> Any:
    """Raw input paths made absolute ({run} = the ablation's --out, {recipe} = the recipe's folder)."""
    if isinstance(value, list):
        return [_resolve(v, run_dir, recipe_dir) for v in value]
    if not isinstance(value, str) or value.startswith("@"):
        return value
    p = Path(value.replace("{run}", str(run_dir)).replace("{recipe}", str(recipe_dir))).expanduser()
    return str(p if p.is_absolute() else recipe_dir / p)


def derive_recipe(recipe: dict[str, Any], *, recipe_path: Path, run_dir: Path, reference: Path | None,
                  checkpoints: bool = True) -> tuple[dict[str, Any], dict[str, str], Path]:
    """(the ablation's recipe, {arm part: step name}, the clean reference file to hold text out of).

    The recipe's stages before its pretrain stage are kept as they are (inputs resolved to absolute
    paths); the raw arm's three steps are added after them; later stages (align) are dropped.
    `checkpoints`: both pretrain sections keep a checkpoint at every eval step (the curves' points);
    off, they stay the recipe's own, so the run's finished pretrain stage is the curated arm."""
    recipe_dir = recipe_path.resolve().parent
    stages = list(recipe.get("run", {}).get("stages", []))
    pretrain = next((s for s in stages if _kind(recipe, s) == "pretrain"), None)
    if pretrain is None:
        raise runs.RunError(f"{recipe_path}: no pretrain stage in [run] stages; the ablation trains the recipe's "
                            "pretrain stage on curated and on raw text")
    tokenize = _upstream(recipe, pretrain, "tokenize", recipe_path)
    curate = _upstream(recipe, tokenize, "curate", recipe_path)
    inputs = {k: {r: _resolve(v, run_dir, recipe_dir) for r, v in roles.items()}
              for k, roles in recipe.get("inputs", {}).items()}

    if reference is None:
        ref_step = next((s for s in stages if _kind(recipe, s) == "reference-lm"), None)
        text = inputs.get(ref_step, {}).get("text") if ref_step else None
        text = text[0] if isinstance(text, list) and text else text
        if not isinstance(text, str) or text.startswith("@") or any(c in text for c in "*?["):
            raise runs.RunError(f"{recipe_path}: no clean reference text to evaluate on (the recipe has no "
                                "reference-lm stage with one text file); give --reference FILE (one document a line)")
        reference = Path(text)

    raw, tok_raw, pre_raw = f"{curate}-raw", f"{tokenize}-raw", f"{pretrain}-raw"
    kept = stages[:stages.index(pretrain)]
    uses = {k: v for k, v in recipe.get("run", {}).get("uses", {}).items() if k in kept}
    uses |= {raw: _kind(recipe, curate), tok_raw: _kind(recipe, tokenize), pre_raw: "pretrain"}
    if pretrain != "pretrain":
        uses[pretrain] = "pretrain"
    out: dict[str, Any] = {"run": {"stages": kept + [raw, tok_raw, pretrain, pre_raw], "uses": uses}}
    out["inputs"] = {k: v for k, v in inputs.items() if k in kept or k == pretrain}
    out["inputs"][raw] = {r: v for r, v in inputs.get(curate, {}).items() if r in RAW_ROLES}
    out["inputs"][tok_raw] = {"data": f"@{raw}", "tokenizer": f"@{tokenize}"}
    out["inputs"][pre_raw] = {"data": f"@{tok_raw}"}
    for name in kept:
        if name in recipe:
            out[name] = cfg._deep_copy(recipe[name])
    out[raw] = cfg._merge(cfg._deep_copy(recipe.get(curate, {})), RAW_CURATE)
    out[tok_raw] = cfg._deep_copy(recipe.get(tokenize, {}))
    out[pretrain] = (_with_checkpoints if checkpoints else lambda sec, _: cfg._deep_copy(sec))(
        recipe.get(pretrain, {}), pretrain)
    out[pre_raw] = cfg._deep_copy(out[pretrain])
    names = {"curate": curate, "tokenize": tokenize, "pretrain": pretrain, "curate_raw": raw,
             "tokenize_raw": tok_raw, "pretrain_raw": pre_raw}
    # The recipe's eval step of the base model, if it has one, judges both arms on the same tasks
    ev = next((s for s in stages if _kind(recipe, s) == "eval"
               and inputs.get(s, {}).get("model") in (f"@{pretrain}", [f"@{pretrain}"])), None)
    if ev is not None:
        ev_raw = f"{ev}-raw"
        out["run"]["stages"] += [ev, ev_raw]
        uses |= {ev: "eval", ev_raw: "eval"}
        section = recipe.get(ev, recipe.get("eval", {}))
        out[ev], out[ev_raw] = cfg._deep_copy(section), cfg._deep_copy(section)
        out["inputs"][ev] = dict(inputs[ev])
        out["inputs"][ev_raw] = dict(inputs[ev]) | {"model": f"@{pre_raw}"}
        names |= {"eval": ev, "eval_raw": ev_raw}
    return out, names, reference


def _with_checkpoints(section: dict[str, Any], name: str) -> dict[str, Any]:
    """The pretrain section, saving (and keeping) a checkpoint at every evaluation step: the curves'
    points. Checkpoints do not change training: both arms get the same section."""
    from gristmill.pretrain.config import PretrainConfig

    pc = cfg.build(PretrainConfig, section, section=name)
    every = pc.eval_every if 0 < pc.eval_every < pc.max_steps else max(1, pc.max_steps // 6)
    out = cfg._deep_copy(section)
    out["checkpoint"] = {**out.get("checkpoint", {}), "every": every, "keep": -(-pc.max_steps // every) + 1}
    return out


def _replace_path(inputs: dict[str, Any], old: Path, new: Path | None) -> int:
    """Every raw input equal to `old` becomes `new` (None: count them only); returns how many there are."""
    n = 0
    for roles in inputs.values():
        for role, value in roles.items():
            values = value if isinstance(value, list) else [value]
            hit = [isinstance(v, str) and not v.startswith("@") and Path(v).resolve() == old.resolve() for v in values]
            n += sum(hit)
            if new is not None:
                swapped = [str(new) if h else v for v, h in zip(values, hit)]
                roles[role] = swapped if isinstance(value, list) else swapped[0]
    return n


# ---------------------------------------------------------------------------------------------
# evaluation


def encode_reference(tokenize_dir: Path, docs: list[str]) -> Any:
    """The held-out documents as one (tokens,) array, each followed by the end-of-text token, as the
    tokenize stage writes documents into shards."""
    import numpy as np

    from gristmill.tokenize.train import load_tokenizer

    m = read_manifest(tokenize_dir)
    tok = load_tokenizer(tokenize_dir / "tokenizer")
    dtype = np.dtype(m.metrics["dtype"])
    eos = np.array([m.metrics["eos_id"]], dtype=dtype)
    parts = []
    for e in tok.encode_batch(docs):
        parts += (np.array(e.ids, dtype=dtype), eos)
    return np.concatenate(parts)


def _eval_sets(tok_dirs: dict[str, Path], ref_tokens: Any, seq_len: int, batch_size: int,
               val_windows: int) -> dict[str, list[Any]]:
    """name -> fixed (B, seq_len + 1) batches: the whole reference, an even spread of each val split."""
    from gristmill.pretrain.data import TokenWindows, val_batches
    from gristmill.tokenize.shards import ShardSet

    ref = TokenWindows([ref_tokens], seq_len)
    if ref.num_windows == 0:
        raise runs.RunError(f"the held-out reference has {len(ref_tokens)} tokens, fewer than one window of "
                            f"pretrain.seq_len + 1 = {seq_len + 1}; raise --heldout-percent or give a longer --reference")
    sets = {"reference": val_batches(ref, count=ref.num_windows, batch_size=batch_size)}
    for arm, d in tok_dirs.items():
        w = TokenWindows(ShardSet.open(d, "val", verify=False).shards, seq_len)
        sets[f"{arm}_val"] = val_batches(w, count=val_windows, batch_size=batch_size)
    return sets


def score_checkpoints(pretrain_dir: Path, sets: dict[str, list[Any]], device: str, dtype: str) -> list[dict[str, Any]]:
    """One row per checkpoint of a pretrain folder: {step, <set>: mean loss in nats/token}."""
    import torch
    from transformers import AutoModelForCausalLM

    from gristmill.train import parallel
    from gristmill.train.checkpoint import list_checkpoints, load_checkpoint
    from gristmill.pretrain.evaluate import validation_loss

    model = AutoModelForCausalLM.from_pretrained(pretrain_dir / "model", dtype=torch.float32)
    rows = []
    with parallel.session(device) as par:
        model.to(par.device)
        for step, path in list_checkpoints(pretrain_dir / "checkpoints"):
            model.load_state_dict(load_checkpoint(path).parts["model"])
            rows.append({"step": step} | {name: validation_loss(model, b, par, dtype) for name, b in sets.items() if b})
    return rows


def contamination(heldout: list[str], curate_dir: Path) -> int:
    """Held-out documents found whole (normalised: case, punctuation, spacing) inside a document of a curate folder."""
    from gristmill.curate.minhash import normalize_text
    from gristmill.tokenize.run import iter_documents

    corpus = "\n".join(normalize_text(t) for f in sorted(curate_dir.glob("documents-*.jsonl.gz"))
                       for _, t in iter_documents(f))
    return sum(1 for d in heldout if (n := normalize_text(d)) and n in corpus)


# ---------------------------------------------------------------------------------------------
# the command


def run_ablation(recipe_path: Path, out: Path, *, overrides: list[str] = (), reference: Path | None = None,
                 config: AblateConfig | None = None, force: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run both arms (finished stages are skipped), score them, write DIR/ablation/; returns results.json's dict."""
    config = config or AblateConfig()
    out = Path(out).absolute()
    recipe_path = Path(recipe_path)
    recipe = cfg.apply_overrides(runs.load_recipe(recipe_path), list(overrides))
    derived, names, ref_source = derive_recipe(recipe, recipe_path=recipe_path, run_dir=out, reference=reference)
    work = out / FOLDER
    if not ref_source.is_file():
        raise runs.RunError(f"{ref_source}: the clean reference text is missing (write the demo data first: "
                            f"`gristmill demo-data --out {out}/data`, or give --reference FILE)")
    used = _replace_path(derived["inputs"], ref_source, None) > 0
    heldout_path, train_path = split_reference(ref_source, work / "reference", config, used_by_recipe=used)
    if train_path is not None:
        # Part of the reference is held out of the recipe's own stages: the curated arm is a new chain
        # (its filters' models trained on the rest), kept apart from the run's stages in RUN/ablation/.
        _replace_path(derived["inputs"], ref_source, train_path)
        base = work
    else:
        # The held-out text is read by no stage of the recipe: the curated arm is the run's own chain
        # (RUN/<stage>, skipped when finished), the raw arm RUN/<stage>-raw beside it.
        derived = derive_recipe(recipe, recipe_path=recipe_path, run_dir=out, reference=ref_source,
                                checkpoints=False)[0]
        base = out

    registry = {s.name: s for s in BUILTIN}
    steps = runs.plan(derived, registry, run_dir=base, recipe_dir=recipe_path.resolve().parent)
    log(f"ablation plan for {recipe_path} -> {base}:\n{runs.format_plan(steps)}")
    runs.execute(steps, log=log)

    d = {k: base / v for k, v in names.items()}
    inputs = {"curated": [d["pretrain"]], "raw": [d["pretrain_raw"]], "curated_tokens": [d["tokenize"]],
              "raw_tokens": [d["tokenize_raw"]], "reference": [heldout_path]}
    if "eval" in d:
        inputs |= {"curated_eval": [d["eval"]], "raw_eval": [d["eval_raw"]]}
    start = begin_stage(STAGE, dataclasses.asdict(config), inputs, work, expect=EXPECT, force=force)
    if start.done is not None:
        log(f"[ablate] skipped: finished (id {start.done.id}); {work / 'ablation.md'}")
        return json.loads((work / "results.json").read_text(encoding="utf-8"))
    m = start.manifest
    results = compare(d, read_reference(heldout_path), config, log=log)
    results["id"] = m.id
    results["eval"] = {arm: read_manifest(d[k]).metrics.get("tasks", {}) for arm, k in
                       (("curated", "eval"), ("raw", "eval_raw"))} if "eval" in d else None
    atomic_write_text(work / "results.json", json.dumps(results, indent=2) + "\n")
    plot(results, work / "ablation.png")
    atomic_write_text(work / "ablation.md", report(results))
    m.metrics = {k: results[k] for k in ("verdict", "curated_wins", "final", "tokens_seen", "tokenizer_sha256",
                                         "contaminated_heldout_documents", "eval")}
    m.outputs = [output_record(work, "results.json", "metrics", deterministic=True),
                 output_record(work, "ablation.png", "plot", deterministic=True),
                 output_record(work, "ablation.md", "report", deterministic=True)]
    write_manifest(work, m)
    log(f"[ablate] {results['verdict']}\n[ablate] report: {work / 'ablation.md'}")
    return results


def compare(d: dict[str, Path], heldout: list[str], config: AblateConfig, *,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score both arms' checkpoints on the held-out reference and both val splits; check what makes the
    comparison fair (same tokenizer, same tokens seen, no held-out document in either arm's text)."""
    from gristmill.pretrain.config import PretrainConfig

    pre = {arm: read_manifest(d[k]) for arm, k in (("curated", "pretrain"), ("raw", "pretrain_raw"))}
    tok = {arm: read_manifest(d[k]) for arm, k in (("curated", "tokenize"), ("raw", "tokenize_raw"))}
    sha = {arm: m.metrics["tokenizer"]["sha256"] for arm, m in tok.items()}
    if sha["curated"] != sha["raw"]:
        raise runs.RunError(f"{d['tokenize_raw']}: its tokenizer ({sha['raw'][:12]}) is not the curated arm's "
                            f"({sha['curated'][:12]}); rerun with --force")
    seen = {arm: m.metrics["tokens_seen"] for arm, m in pre.items()}
    if seen["curated"] != seen["raw"]:
        raise runs.RunError(f"{d['pretrain_raw']}: saw {seen['raw']} tokens, the curated arm {seen['curated']}; "
                            "both pretrain sections must be the same (rerun with --force)")
    pc = cfg.build(PretrainConfig, pre["curated"].config, section="pretrain")
    ref_tokens = encode_reference(d["tokenize"], heldout)
    sets = _eval_sets({arm: d[k] for arm, k in (("curated", "tokenize"), ("raw", "tokenize_raw"))}, ref_tokens,
                      pc.seq_len, pc.batch_size, config.val_windows)
    curves = {}
    for arm, key in (("curated", "pretrain"), ("raw", "pretrain_raw")):
        log(f"[ablate] scoring the {arm} model's checkpoints on {', '.join(sets)}")
        curves[arm] = score_checkpoints(d[key], sets, pc.device, pc.dtype)
    final = {arm: {k: v for k, v in rows[-1].items() if k != "step"} for arm, rows in curves.items()}
    contaminated = {arm: contamination(heldout, d[k]) for arm, k in (("curated", "curate"), ("raw", "curate_raw"))}
    ref_c, ref_r = final["curated"]["reference"], final["raw"]["reference"]
    wins = ref_c < ref_r
    verdict = (f"{'curated' if wins else 'raw'} text wins on the held-out clean reference: "
               f"{ref_c:.4f} vs {ref_r:.4f} nats/token for the curated vs the raw model "
               f"(perplexity {math.exp(ref_c):.2f} vs {math.exp(ref_r):.2f}), same tokenizer, "
               f"{seen['curated']:,} tokens seen by each")
    return {
        "verdict": verdict, "curated_wins": wins, "final": final, "curves": curves,
        "tokens_seen": seen["curated"], "tokenizer_sha256": sha["curated"],
        "eval_tokens": {name: int(sum(b.shape[0] * (b.shape[1] - 1) for b in batches)) for name, batches in sets.items()},
        "heldout_documents": len(heldout), "contaminated_heldout_documents": contaminated,
        "arms": {arm: {"stage_folder": f"{d[k].parent.name}/{d[k].name}", "documents": read_manifest(d[c]).metrics["kept"],
                       "train_tokens": tok[arm].metrics["train_tokens"], "val_tokens": tok[arm].metrics["val_tokens"],
                       "epochs": seen[arm] / max(1, tok[arm].metrics["train_tokens"]),
                       "final_train_loss": pre[arm].metrics["final_train_loss"]}
                 for arm, k, c in (("curated", "pretrain", "curate"), ("raw", "pretrain_raw", "curate_raw"))},
    }


LABELS = {"reference": "held-out clean reference", "curated_val": "curated val split", "raw_val": "raw val split"}


def report(r: dict[str, Any]) -> str:
    a, f, n = r["arms"], r["final"], r["eval_tokens"]
    lines = [f"# curation ablation {r['id']}", "", f"**Verdict: {r['verdict']}.**", "",
             "Validation loss (nats/token) of the final models; lower is better.", "",
             "| evaluated on | tokens | curated model | raw model |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {LABELS[k]} | {n[k]:,} | {f['curated'][k]:.4f} | {f['raw'][k]:.4f} |" for k in LABELS if k in n]
    if r.get("eval"):
        ev = r["eval"]
        lines += ["", "Benchmarks (the recipe's eval of its base model, both arms on the same examples; score ± "
                  "standard error, points):", "", "| task | metric | n | random baseline | curated model | raw model |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        pm = lambda v: f"{100 * v['value']:.1f} ± {100 * (v.get('stderr') or 0):.1f}"  # noqa: E731
        lines += [f"| {t} | {v['metric']} | {v['n']} | {100 * v['random_baseline']:.1f} | {pm(v)} | "
                  f"{pm(ev['raw'][t]) if t in ev['raw'] else '—'} |" for t, v in ev["curated"].items()]
    lines += ["", "| arm | documents | train tokens | epochs at the budget | final train loss | "
              "held-out documents found in its text |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {arm} | {a[arm]['documents']:,} | {a[arm]['train_tokens']:,} | {a[arm]['epochs']:.2f} | "
              f"{a[arm]['final_train_loss']:.4f} | {r['contaminated_heldout_documents'][arm]} |" for arm in ("curated", "raw")]
    lines += ["", f"Both models: the same pretrain config and seed, {r['tokens_seen']:,} tokens seen, one tokenizer "
              f"(sha256 {r['tokenizer_sha256'][:16]}…, trained on the curated text). The held-out reference is "
              f"{r['heldout_documents']} documents of clean text that neither the filters' models nor either arm "
              "trained on. The raw arm is the same dump with extraction only: no URL filter, language ID, "
              "heuristics, perplexity / quality filter or dedup.", "", "![validation loss against step](ablation.png)",
              "", "## Curves", "", "| step | " + " | ".join(f"{arm}: {LABELS[k]}" for arm in ("curated", "raw")
                                                            for k in LABELS if k in n) + " |",
              "| ---: |" + " ---: |" * (2 * len([k for k in LABELS if k in n]))]
    for c, w in zip(r["curves"]["curated"], r["curves"]["raw"]):
        lines.append(f"| {c['step']} | " + " | ".join(f"{row.get(k, float('nan')):.4f}" for row in (c, w)
                                                      for k in LABELS if k in n) + " |")
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    """Loss on the held-out reference (solid) and on the other arm's val split (dashed) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for arm, color in (("curated", "tab:green"), ("raw", "tab:red")):
        rows = r["curves"][arm]
        steps = [row["step"] for row in rows]
        ax.plot(steps, [row["reference"] for row in rows], "o-", color=color, label=f"{arm} model: {LABELS['reference']}")
        other = "raw_val" if arm == "curated" else "curated_val"
        if all(other in row for row in rows):
            ax.plot(steps, [row[other] for row in rows], "--", color=color, alpha=0.6, label=f"{arm} model: {LABELS[other]}")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"curated vs raw text, {r['tokens_seen']:,} tokens each")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
