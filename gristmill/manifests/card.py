"""Model cards: the README.md in a stage's model folder (Hugging Face front matter), written from its manifest."""
from __future__ import annotations

import json
import math
import posixpath
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from gristmill.manifests.io import atomic_write_text
from gristmill.manifests.schema import MANIFEST_NAME, InputRecord, Manifest

CARD_NAME = "README.md"  # the name the Hugging Face Hub and `huggingface_hub.ModelCard` look for
MODEL_ROLES = ("model", "reward")  # input roles that are models
DATA_ROLES = ("data",)  # input roles the model trained on: the card's `datasets`
EVAL_ROLES = ("eval",)  # held-out sets: named in `model-index` with the figures measured on them, never as training data
SHORT_SHA = 16  # hex digits of a sha256 quoted in names (the manifest and the card's gristmill block have it whole)

# Per stage: the held-out figures the card quotes (manifest metric key, label), in this order; a key the
# manifest lacks or holds null for is left out. Only figures computed from the model and fixed data (no wall
# times, no rates): the card is a deterministic output, so two runs of one config must write the same bytes.
CARD_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "pretrain": (("val_loss", "validation loss (nats/token)"), ("val_perplexity", "validation perplexity"),
                 ("final_train_loss", "final train loss (mean of the last steps)"), ("tokens_seen", "tokens trained on"),
                 ("steps", "steps"), ("params", "parameters")),
    "sft": (("eval_loss_before", "held-out loss on assistant tokens, before"), ("eval_loss", "held-out loss on assistant tokens"),
            ("eval_token_accuracy", "held-out token accuracy"),
            ("answer_accuracy_before", "exact-answer accuracy, before (greedy)"),
            ("answer_accuracy", "exact-answer accuracy (greedy)"), ("answers_checked", "answers checked")),
    "reward": (("eval_accuracy", "pairwise accuracy (held-out pairs)"), ("eval_margin", "mean reward margin, chosen - rejected"),
               ("eval_loss", "held-out Bradley-Terry loss"),
               ("length_spearman", "length bias: Spearman correlation of reward and length"),
               ("accuracy_chosen_shorter", "accuracy on pairs whose chosen answer is shorter"),
               ("pairs_chosen_shorter", "held-out pairs whose chosen answer is shorter")),
    "dpo": (("eval_accuracy", "implicit-reward accuracy (held-out pairs)"), ("eval_margin", "implicit-reward margin"),
            ("win_rate", "win rate against the input model (judged by the reward model)"),
            ("reward_gain", "reward gain (after - before)"), ("kl_to_reference", "KL to the reference model"),
            ("answer_accuracy", "checked-answer accuracy (greedy)")),
    "ppo": (("win_rate", "win rate against the input model (judged by the reward model)"),
            ("reward_gain", "reward gain (after - before)"),
            ("answer_accuracy_before", "checker accuracy, before (greedy)"), ("answer_accuracy", "checker accuracy (greedy)"),
            ("sampled_accuracy", "checker accuracy (sampled)"), ("kl_to_sft", "KL to the input model")),
}

# Per stage: the CARD_METRICS figures that go into `model-index` (metric key -> the metric `type`, an id in the
# style of https://hf.co/metrics). Only figures of this model on its held-out set: not the input model's
# ("_before"), not counts, not training-run facts (steps, tokens, the train loss).
INDEX_METRICS: dict[str, dict[str, str]] = {
    "pretrain": {"val_loss": "loss", "val_perplexity": "perplexity"},
    "sft": {"eval_loss": "loss", "eval_token_accuracy": "accuracy", "answer_accuracy": "exact_match"},
    "reward": {"eval_accuracy": "accuracy", "eval_margin": "reward_margin", "eval_loss": "loss",
               "length_spearman": "spearmanr", "accuracy_chosen_shorter": "accuracy"},
    "dpo": {"eval_accuracy": "accuracy", "eval_margin": "reward_margin", "win_rate": "win_rate",
            "reward_gain": "reward_gain", "kl_to_reference": "kl_divergence", "answer_accuracy": "exact_match"},
    "ppo": {"win_rate": "win_rate", "reward_gain": "reward_gain", "answer_accuracy": "exact_match",
            "sampled_accuracy": "exact_match", "kl_to_sft": "kl_divergence"},
}

_CLASSIFIER_STAGES = ("reward",)  # stages whose model is a sequence classifier (one score), not a causal LM
# A Hub repo id (huggingface_hub's validate_repo_id): [namespace/]name of word characters, '-' and '.', at most
# 96 each, no '--' or '..'. The Hub reads `base_model` and `datasets` as such ids and refuses a push whose
# `datasets` holds a path; a name of this shape is all the front matter's Hugging Face keys get.
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"(?:{_HUB_PART}/)?{_HUB_PART}")


def card_metrics(m: Manifest) -> dict[str, Any]:
    """The manifest metrics the card quotes for this stage, in CARD_METRICS order (null ones left out)."""
    return {k: m.metrics[k] for k, _ in CARD_METRICS.get(m.stage, ()) if m.metrics.get(k) is not None}


# -- portable names: what a card calls a model or a data set, the same on every machine


def model_name(stage: str, stage_id: str) -> str:
    """A gristmill stage's model by name: `<stage>-<id>` (e.g. `sft-1a2b3c4d5e6f7a8b`). The id is the content
    id of config and inputs, so the name is unique and the same wherever the run lies; no `gristmill/`
    namespace, which would claim a Hub organisation these models do not belong to."""
    return f"{stage}-{stage_id}"


def is_hub_id(name: Any) -> bool:
    """True for a string of the Hub's repo id shape (`gpt2`, `HuggingFaceTB/SmolLM2-135M`); never for a path."""
    return (isinstance(name, str) and _HUB_ID.fullmatch(name) is not None and "--" not in name and ".." not in name
            and not name.endswith(".git"))


def hub_safe(name: str) -> str | None:
    """`name` in the Hub's id shape (each run of other characters becomes '-'), or None when nothing is left."""
    parts = []
    for part in name.split("/")[-2:]:
        part = re.sub(r"\.{2,}", ".", re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9_.-]+", "-", part)))
        part = part.strip("-.")[:96].strip("-.")
        if part:
            parts.append(part)
    out = "/".join(parts)
    return out if is_hub_id(out) else None


def _path_parts(rec: InputRecord) -> list[str]:
    """The record's path as its names, without the `.`/`..` steps that say where it lay from the stage folder."""
    p = posixpath.normpath(rec.path.replace("\\", "/"))
    return [x for x in p.split("/") if x not in ("", ".", "..")]


def input_names(inputs: Sequence[InputRecord]) -> list[str]:
    """The portable name of each input, in order: a stage input `<stage>-<id>`; a raw file or folder its own
    name, or its last two path parts where two inputs share a name (HH's `harmless-base/test.jsonl.gz` and
    `helpful-base/test.jsonl.gz`). Never a path of this machine: no `..`, nothing absolute."""
    tails = [[] if i.stage else _path_parts(i) for i in inputs]
    names = [model_name(i.stage, i.id or "?") if i.stage else (t[-1] if t else f"{i.role}-{i.sha256[:SHORT_SHA]}")
             for i, t in zip(inputs, tails)]
    paths: dict[str, set[str]] = {}
    for i, n in zip(inputs, names):
        if not i.stage:
            paths.setdefault(n, set()).add(i.path)
    return [("/".join(t[-2:]) if not i.stage and len(paths[n]) > 1 and len(t) > 1 else n)
            for i, t, n in zip(inputs, tails, names)]


def _labelled(rec: InputRecord, name: str) -> str:
    """A name with its content hash, for prose: `train.jsonl (sha256:0123456789abcdef)`; a stage's name is its id."""
    return name if rec.stage else f"{name} (sha256:{rec.sha256[:SHORT_SHA]})"


def card_front_matter(path: str | Path) -> dict[str, Any]:
    """The YAML front matter of a model card (README.md) as a dict; {} when there is none or it does not parse."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    found = re.match(r"---\r?\n(.*?\r?\n)?---\r?\n", text, re.S)
    try:
        fm = yaml.safe_load(found.group(1) or "") if found else None
    except yaml.YAMLError:
        return {}
    return fm if isinstance(fm, dict) else {}


def _hub_ancestor(fm: dict[str, Any]) -> str | None:
    base = fm.get("base_model")
    return base if is_hub_id(base) else None


def _raw_model_identity(folder: Path) -> dict[str, str]:
    """What a plain model folder says about itself: {"name": Hub id, "hub_id": the same} for a Hub model,
    {"stage", "id", "hub_id"?} for a gristmill model folder given as a plain folder (its card says so), {} when
    it says nothing."""
    card = card_front_matter(folder / CARD_NAME)
    g = card.get("gristmill")
    if isinstance(g, dict) and isinstance(g.get("stage"), str) and isinstance(g.get("id"), str):
        out = {"name": model_name(g["stage"], g["id"]), "stage": g["stage"], "id": g["id"]}
        hub = _hub_ancestor(card)
        return out | ({"hub_id": hub} if hub else {})
    # The Hub's download cache names the folder: .../models--<org>--<name>/snapshots/<revision>/
    parts = folder.parts
    for k, part in enumerate(parts[:-2]):
        repo = part[len("models--"):].replace("--", "/")
        if part.startswith("models--") and parts[k + 1] == "snapshots" and is_hub_id(repo):
            return {"name": repo, "hub_id": repo}
    # config.json's _name_or_path (transformers 4 saved it): the id the folder was loaded by, unless that was a
    # local path (transformers' own test when it writes base_model: not a folder that exists)
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    name = cfg.get("_name_or_path") if isinstance(cfg, dict) else None
    if is_hub_id(name) and not Path(name).exists() and not (folder.parent / name).exists():
        return {"name": name, "hub_id": name}
    return {}


def base_model(m: Manifest, stage_dir: str | Path | None = None) -> dict[str, str] | None:
    """The model this one was trained from, named portably; None when the stage trains from scratch.

    {"name", "label", "hub_id"?, ...}: `name` is `<stage>-<id>` for a gristmill stage (or a gristmill model folder),
    the model's own Hub id when its folder says it (the Hub cache layout, config.json's `_name_or_path`), else
    the folder's name; `label` adds `sha256:<16 hex>` of the folder to a bare folder name. `hub_id` is the Hub
    model this one descends from, when known: the Hub reads the card's `base_model` as such an id. `stage_dir`
    (the folder holding the manifest) lets the input's own folder be read; without it only the manifest is."""
    k = next((n for n, i in enumerate(m.inputs) if i.role == "model"), None)
    if k is None:
        return None
    rec, name = m.inputs[k], input_names(m.inputs)[k]
    out = {"name": name}
    if rec.stage is not None:
        out |= {"stage": rec.stage, "id": rec.id or "?"}
    if stage_dir is not None:
        from gristmill.manifests.store import resolve_input_path

        folder = resolve_input_path(Path(stage_dir), rec)
        if rec.stage is not None:  # a stage input's path is its manifest; its card lies in model/ beside it
            hub = _hub_ancestor(card_front_matter((folder.parent if folder.name == MANIFEST_NAME else folder)
                                                  / "model" / CARD_NAME))
            out |= {"hub_id": hub} if hub else {}
        else:
            out |= _raw_model_identity(folder)
    if rec.stage is None:
        out["sha256"] = rec.sha256
    plain = rec.stage is None and "stage" not in out and "hub_id" not in out
    out["label"] = f"{out['name']} (sha256:{rec.sha256[:SHORT_SHA]})" if plain else out["name"]
    return out


# -- model-index: evaluation results in the Hugging Face convention (https://github.com/huggingface/hub-docs/blob/main/modelcard.md)


def metric_type(name: str) -> str:
    """A metric id from a metric's name: lower case, each run of other characters one '_' (`acc_norm`,
    `exact_match`)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "metric"


def _figure(v: Any) -> bool:
    # YAML would write a NaN as .nan, which is no JSON number; a bool is no figure
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def model_index_result(task_name: str, dataset_name: str, metrics: Iterable[Sequence[Any]], *,
                       task_type: str = "text-generation", dataset_type: str | None = None,
                       split: str | None = None) -> dict[str, Any] | None:
    """One `model-index` result: a task, the data set it was measured on, and its figures.

    `metrics`: (metric name, value) or (metric name, value, metric type) each, in the order to show; a value
    that is None or not a finite number is left out, and a result without figures is None. `dataset_type`
    is the data set's Hub id when it has one (e.g. `cais/mmlu`); by default the name in the Hub's id shape."""
    rows = [{"type": r[2] if len(r) > 2 and r[2] else metric_type(r[0]), "value": r[1], "name": r[0]}
            for r in metrics if _figure(r[1])]
    if not rows:
        return None
    dataset = {"name": dataset_name, "type": dataset_type or hub_safe(dataset_name) or metric_type(dataset_name)}
    return {"task": {"type": task_type, "name": task_name},
            "dataset": dataset | ({"split": split} if split else {}), "metrics": rows}


def model_index_results(rows: Iterable[Sequence[Any]], *, task_type: str = "text-generation",
                        dataset_types: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """`model-index` results from flat rows (task name, dataset name, metric name, value[, metric type]): one
    result per (task, dataset) in the order first seen, its metrics in row order. `dataset_types` maps a
    dataset name to its Hub id. Feed the list to `write_model_card(..., results=...)`."""
    groups: dict[tuple[str, str], list[Sequence[Any]]] = {}
    for r in rows:
        groups.setdefault((r[0], r[1]), []).append((r[2], r[3], *r[4:5]))
    out = [model_index_result(task, data, metrics, task_type=task_type,
                              dataset_type=(dataset_types or {}).get(data)) for (task, data), metrics in groups.items()]
    return [r for r in out if r is not None]


def model_index(name: str, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `model-index` value: one model, `name`, and its results ([] when there are none)."""
    return [{"name": name, "results": list(results)}] if results else []


def add_model_index_results(fm: Mapping[str, Any], results: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    """A copy of card front matter `fm` (card_front_matter()) whose `model-index` keeps the card's results and adds
    `results` after them; a kept result for the same task and data set as a new one gives way (a re-evaluation).
    `name` names the model when the card has no `model-index` yet; an existing entry keeps its name."""
    out = dict(fm)
    index = [dict(e) for e in out.get("model-index") or [] if isinstance(e, dict)]
    entry = index[0] if index else {"name": name, "results": []}

    def key(r: dict[str, Any]) -> tuple[Any, Any]:
        return (r.get("task", {}).get("name"), r.get("dataset", {}).get("name"))

    new = {key(r) for r in results}
    entry["results"] = [r for r in entry.get("results") or [] if key(r) not in new] + list(results)
    out["model-index"] = [entry] + index[1:] if entry["results"] else index[1:]
    if not out["model-index"]:
        del out["model-index"]
    return out


def held_out_dataset(m: Manifest) -> dict[str, str] | None:
    """The data set the stage's own held-out figures come from, as `model-index` names it: its `eval` inputs
    (file name and sha256), else the split it held out of its training data; None when it has neither."""
    names = input_names(m.inputs)
    evals = [(i, n) for i, n in zip(m.inputs, names) if i.role in EVAL_ROLES]
    if evals:
        return {"name": " + ".join(_labelled(i, n) for i, n in evals), "type": hub_safe(evals[0][1]) or "eval"}
    data = [(i, n) for i, n in zip(m.inputs, names) if i.role in DATA_ROLES]
    if not data:
        return None
    if data[0][0].stage:  # a stage input: pretrain scores the val split its tokenize stage wrote
        return {"name": f"val split of {data[0][1]}", "type": data[0][1], "split": "validation"}
    cfg = m.config.get("data") if isinstance(m.config.get("data"), dict) else {}
    share = f", eval_fraction {cfg['eval_fraction']:g}" if _figure(cfg.get("eval_fraction")) else ""
    return {"name": f"held-out split (stable hash{share}) of {' + '.join(_labelled(i, n) for i, n in data)}",
            "type": hub_safe(data[0][1]) or "data", "split": "held-out"}


def stage_results(m: Manifest) -> list[dict[str, Any]]:
    """The stage's own held-out figures (INDEX_METRICS) as `model-index` results, on held_out_dataset(m)."""
    kinds, labels, ds = INDEX_METRICS.get(m.stage, {}), dict(CARD_METRICS.get(m.stage, ())), held_out_dataset(m)
    if ds is None:
        return []
    task = "Text Classification" if m.stage in _CLASSIFIER_STAGES else "Text Generation"
    r = model_index_result(task, ds["name"], [(labels[k], m.metrics.get(k), t) for k, t in kinds.items()],
                           task_type="text-classification" if m.stage in _CLASSIFIER_STAGES else "text-generation",
                           dataset_type=ds["type"], split=ds.get("split"))
    return [r] if r else []


def _tags(m: Manifest) -> list[str]:
    c = m.config
    tags = ["gristmill", {"reward": "reward-model"}.get(m.stage, m.stage)]
    variant = {"dpo": c.get("loss"), "ppo": c.get("advantage")}.get(m.stage)
    if variant and variant not in (m.stage, "gae"):
        tags.append(str(variant))  # dpo.loss=ipo, ppo.advantage=grpo: the method actually used (gae is plain ppo)
    if m.stage == "pretrain":
        tags.append("from-scratch")
    elif isinstance(c.get("lora"), dict):
        tags.append("lora" if c["lora"].get("enabled") else "full-fine-tune")
    return tags


def _input_rows(m: Manifest, base: dict[str, str] | None) -> list[dict[str, str]]:
    """The gristmill block's inputs: role, portable name, and the stage id or the content hash. A stage input is
    named by its id, not by its manifest's sha256: the manifest records when it was written, so that hash differs
    between two runs of one config (and after a resume); the id does not. No paths: they are this machine's."""
    rows = []
    for i, n in zip(m.inputs, input_names(m.inputs)):
        name = base["name"] if base and i.role == "model" else n
        rows.append({k: v for k, v in (("role", i.role), ("name", name), ("stage", i.stage), ("id", i.id),
                                       ("sha256", None if i.stage else i.sha256)) if v is not None})
    return rows


def front_matter(m: Manifest, stage_dir: str | Path | None = None,
                 results: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The card's YAML front matter as a dict (Hugging Face keys first, then gristmill's own). `results`: more
    `model-index` results (model_index_results()) after the stage's own held-out ones."""
    fm: dict[str, Any] = {}
    base = base_model(m, stage_dir)
    if base is not None and base.get("hub_id"):
        # Only a Hub model id: the Hub links `base_model` into its model tree (a local name would link nowhere or
        # to someone else's model), as transformers' Trainer writes it only for a model loaded from the Hub.
        fm["base_model"] = base["hub_id"]
        # The model folder holds the adapters merged into the weights: a fine-tune of the base, not an adapter.
        fm["base_model_relation"] = "finetune"
    names = input_names(m.inputs)
    train = [hub_safe(n) for i, n in zip(m.inputs, names) if i.role in DATA_ROLES]
    if any(train):
        fm["datasets"] = list(dict.fromkeys(t for t in train if t))  # ids in the Hub's shape; hashes below
    fm["library_name"] = "transformers"
    fm["pipeline_tag"] = "text-classification" if m.stage in _CLASSIFIER_STAGES else "text-generation"
    fm["tags"] = _tags(m)
    # No `license`: gristmill does not know the license of the data a user trains on, and the Hub reads a
    # wrong one as a grant. Add it by hand when you know it.
    index = model_index(model_name(m.stage, m.id), stage_results(m) + list(results))
    if index:
        fm["model-index"] = index
    fm["gristmill"] = {"stage": m.stage, "id": m.id, "version": m.software.get("gristmill", "unknown")}
    if base is not None:
        fm["gristmill"]["base_model"] = base["label"]
    fm["gristmill"] |= {"inputs": _input_rows(m, base), "metrics": card_metrics(m)}
    return fm


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)  # shortest round-trip form; TOML reads 1e-05 and 0.001 alike
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"config value {v!r} ({type(v).__name__}) has no TOML form")


def config_toml(section: str, config: dict[str, Any]) -> str:
    """The resolved config as a recipe section (`[sft]`, `[sft.lora]`, ...). TOML has no null: a None field
    is written as a comment, so the block pastes into a recipe and gives the same config back."""
    lines = [f"[{section}]"]
    subs = []
    for k, v in config.items():
        if isinstance(v, dict):
            subs.append((k, v))
        elif v is None:
            lines.append(f"# {k} = (none: the default)")
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in subs:
        lines += ["", config_toml(f"{section}.{k}", v)]
    return "\n".join(lines)


def _yaml(fm: dict[str, Any]) -> str:
    import yaml  # PyYAML: a dependency of transformers and huggingface_hub, always installed with them

    # safe_dump: plain types only; sort_keys=False keeps the order above; width: no folded long names.
    return yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000)


def _origin(base: dict[str, str]) -> str:
    """Where the base model came from, for the card's first sentence."""
    if "stage" in base and "sha256" not in base:
        src = f"the `{base['stage']}` stage `{base['id']}`"
    elif "stage" in base:
        src = "a gristmill model folder"
    else:
        src = "a Hugging Face model folder"
    hub = base.get("hub_id")
    return src + (f", which descends from [`{hub}`](https://huggingface.co/{hub})" if hub and hub != base["name"] else "")


def model_card(m: Manifest, stage_dir: str | Path | None = None, results: Sequence[dict[str, Any]] = ()) -> str:
    """The model card (README.md) of the model folder of the stage `m` describes: YAML front matter in the
    Hugging Face convention, then how it was made, on what, with which config, its held-out metrics and how
    to load it. A pure function of the manifest's stage, id, config, inputs and metrics (no times, no paths of
    this machine), and, with `stage_dir`, of what the input model's folder says its name is; so the same run
    writes the same bytes. `results`: more `model-index` results (model_index_results())."""
    fm = front_matter(m, stage_dir, results)
    base = base_model(m, stage_dir)
    classifier = m.stage in _CLASSIFIER_STAGES
    auto = "AutoModelForSequenceClassification" if classifier else "AutoModelForCausalLM"
    what = {"pretrain": "base language model", "sft": "supervised fine-tune", "reward": "reward model",
            "dpo": "preference-optimised model", "ppo": "RL-aligned model"}.get(m.stage, "model")
    lines = [f"---\n{_yaml(fm)}---", "", f"# {m.stage} {m.id}: {what}", ""]
    if base is None:
        lines.append(f"Trained from scratch by gristmill's `{m.stage}` stage (id `{m.id}`).")
    else:
        lines.append(f"Trained by gristmill's `{m.stage}` stage (id `{m.id}`) from `{base['label']}` ({_origin(base)}), "
                     f"{'with LoRA adapters merged into the weights' if 'lora' in fm['tags'] else 'all weights trained'}.")
    method = {"dpo": ("loss", "beta"), "ppo": ("advantage", "reward", "kl_coef")}.get(m.stage, ())
    if any(k in m.config for k in method):
        lines += ["", "Method: " + ", ".join(f"`{m.stage}.{k}` = {_toml_value(m.config[k])}" for k in method
                                             if k in m.config) + "."]
    lines += ["", f"The stage folder `..` holds `{MANIFEST_NAME}`, which lists this card and every file of this folder "
                  "with its sha256 (`gristmill manifest verify ..` re-hashes them) and where each input lay. This card "
                  "names inputs the same on every machine: a gristmill stage by `<stage>-<id>`, a file or folder by its "
                  "name and sha256.", ""]

    lines += ["## Inputs", "", "| role | name | made by | sha256 of the data |", "| --- | --- | --- | --- |"]
    for row in fm["gristmill"]["inputs"]:  # stage inputs: their id; their manifest lists their outputs' hashes
        made = f"`{row['stage']}` {row['id']}" if "stage" in row else "raw"
        digest = f"`{row['sha256']}`" if "sha256" in row else "see its manifest"
        lines.append(f"| {row['role']} | `{row['name']}` | {made} | {digest} |")

    metrics = card_metrics(m)
    labels = dict(CARD_METRICS.get(m.stage, ()))
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"] + [f"| {labels[k]} | {_fmt(v)} |" for k, v in metrics.items()]
    else:
        lines.append("None recorded.")
    ds = held_out_dataset(m)
    held = f"Held-out figures are measured on {ds['name']}; the front matter's `model-index` has them. " if ds and metrics else ""
    lines += ["", f"{held}Every figure, and more, is in `../{MANIFEST_NAME}` (metrics) and `../report.md`.", ""]

    lines += ["## Config", "", "The stage's resolved config, defaults included (a recipe section):", "",
              "```toml", config_toml(m.stage, m.config), "```", ""]

    lines += ["## How to load", "", "```python", f"from transformers import {auto}, AutoTokenizer", "",
              'folder = "path/to/this/folder"',
              "tokenizer = AutoTokenizer.from_pretrained(folder)",
              f"model = {auto}.from_pretrained(folder)", "```", ""]
    if classifier:
        lines += ["The reward is the single logit at the last token of a conversation rendered with the tokenizer's "
                  "chat template.", ""]
    elif m.stage != "pretrain":
        lines += ["Prompts go through the tokenizer's chat template (`tokenizer.apply_chat_template`).", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, m: Manifest, model: str = "model",
                     results: Sequence[dict[str, Any]] = ()) -> Path:
    """Write `out_dir/<model>/README.md` atomically; returns its path relative to `out_dir` for the manifest
    (list it with `output_record(out_dir, path, "card", deterministic=True)` before `write_manifest`).
    `out_dir` is the stage folder holding `m`'s manifest: the input model's folder is read from there for its
    name. `results`: more `model-index` results (model_index_results()), e.g. benchmark scores."""
    rel = Path(model) / CARD_NAME
    atomic_write_text(Path(out_dir) / rel, model_card(m, out_dir, results))
    return rel
