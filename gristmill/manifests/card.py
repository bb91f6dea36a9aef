"""Model cards: the README.md in a stage's model folder (Hugging Face front matter), written from its manifest."""
from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any

from gristmill.manifests.io import atomic_write_text
from gristmill.manifests.schema import MANIFEST_NAME, InputRecord, Manifest

CARD_NAME = "README.md"  # the name the Hugging Face Hub and `huggingface_hub.ModelCard` look for
MODEL_ROLES = ("model", "reward")  # input roles that are models; every other role is data

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

_CLASSIFIER_STAGES = ("reward",)  # stages whose model is a sequence classifier (one score), not a causal LM


def card_metrics(m: Manifest) -> dict[str, Any]:
    """The manifest metrics the card quotes for this stage, in CARD_METRICS order (null ones left out)."""
    return {k: m.metrics[k] for k, _ in CARD_METRICS.get(m.stage, ()) if m.metrics.get(k) is not None}


def base_model(m: Manifest) -> str | None:
    """The model this one was trained from: the upstream stage's model folder (a stage input's path is its
    manifest.json, its weights live in model/ beside it) or the raw folder, as the manifest records it
    (relative to the stage folder); None when the stage trains from scratch (pretrain)."""
    rec = next((i for i in m.inputs if i.role == "model"), None)
    if rec is None:
        return None
    p = PurePosixPath(rec.path.replace("\\", "/"))
    if rec.stage is not None:
        return str((p.parent if p.name == MANIFEST_NAME else p) / "model")
    return str(p)


def _data_path(rec: InputRecord) -> str:
    p = PurePosixPath(rec.path.replace("\\", "/"))
    return str(p.parent) if rec.stage is not None and p.name == MANIFEST_NAME else str(p)


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


def front_matter(m: Manifest) -> dict[str, Any]:
    """The card's YAML front matter as a dict (Hugging Face keys first, then gristmill's own)."""
    fm: dict[str, Any] = {}
    base = base_model(m)
    if base is not None:
        fm["base_model"] = base
        # The model folder holds the adapters merged into the weights: a fine-tune of the base, not an adapter.
        fm["base_model_relation"] = "finetune"
    data = [i for i in m.inputs if i.role not in MODEL_ROLES]
    if data:
        fm["datasets"] = [_data_path(i) for i in data]
    fm["library_name"] = "transformers"
    fm["pipeline_tag"] = "text-classification" if m.stage in _CLASSIFIER_STAGES else "text-generation"
    fm["tags"] = _tags(m)
    # No `license`: gristmill does not know the license of the data a user trains on, and the Hub reads a
    # wrong one as a grant. Add it by hand when you know it.
    fm["gristmill"] = {
        "stage": m.stage, "id": m.id, "version": m.software.get("gristmill", "unknown"),
        "paths_relative_to": "..",  # the stage folder holding manifest.json, as in the manifest
        # A stage input is named by its id, not by its manifest's sha256: the manifest records when it was
        # written, so that hash differs between two runs of one config (and after a resume); the id does not.
        "inputs": [{k: v for k, v in (("role", i.role), ("path", i.path), ("stage", i.stage), ("id", i.id),
                                      ("sha256", None if i.stage else i.sha256)) if v is not None} for i in m.inputs],
        "metrics": card_metrics(m),
    }
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

    # safe_dump: plain types only; sort_keys=False keeps the order above; width: no folded long paths.
    return yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000)


def model_card(m: Manifest) -> str:
    """The model card (README.md) of the model folder of the stage `m` describes: YAML front matter in the
    Hugging Face convention, then how it was made, on what, with which config, its held-out metrics and how
    to load it. A pure function of the manifest's stage, id, config, inputs and metrics (no times), so the
    same run writes the same bytes."""
    fm = front_matter(m)
    base = fm.get("base_model")
    classifier = m.stage in _CLASSIFIER_STAGES
    auto = "AutoModelForSequenceClassification" if classifier else "AutoModelForCausalLM"
    what = {"pretrain": "base language model", "sft": "supervised fine-tune", "reward": "reward model",
            "dpo": "preference-optimised model", "ppo": "RL-aligned model"}.get(m.stage, "model")
    lines = [f"---\n{_yaml(fm)}---", "", f"# {m.stage} {m.id}: {what}", ""]
    if base is None:
        lines.append(f"Trained from scratch by gristmill's `{m.stage}` stage (id `{m.id}`).")
    else:
        up = next(i for i in m.inputs if i.role == "model")
        src = f"the `{up.stage}` stage `{up.id}`" if up.stage else "a Hugging Face folder"
        lines.append(f"Trained by gristmill's `{m.stage}` stage (id `{m.id}`) from `{base}` ({src}), "
                     f"{'with LoRA adapters merged into the weights' if 'lora' in fm['tags'] else 'all weights trained'}.")
    method = {"dpo": ("loss", "beta"), "ppo": ("advantage", "reward", "kl_coef")}.get(m.stage, ())
    if any(k in m.config for k in method):
        lines += ["", "Method: " + ", ".join(f"`{m.stage}.{k}` = {_toml_value(m.config[k])}" for k in method
                                             if k in m.config) + "."]
    lines += ["", f"The stage folder `..` holds `{MANIFEST_NAME}`, which lists this card and every file of this folder "
                  "with its sha256 (`gristmill manifest verify ..` re-hashes them). Paths on this card are relative to "
                  "that stage folder, as in the manifest.", ""]

    lines += ["## Inputs", "", "| role | path | made by | sha256 of the data |", "| --- | --- | --- | --- |"]
    for i in m.inputs:  # stage inputs: their id (see front_matter); their manifest lists their outputs' hashes
        made = f"`{i.stage}` {i.id}" if i.stage else "raw"
        lines.append(f"| {i.role} | `{i.path}` | {made} | {'see its manifest' if i.stage else f'`{i.sha256}`'} |")

    metrics = card_metrics(m)
    labels = dict(CARD_METRICS.get(m.stage, ()))
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"] + [f"| {labels[k]} | {_fmt(v)} |" for k, v in metrics.items()]
    else:
        lines.append("None recorded.")
    lines += ["", f"Every figure, and more, is in `../{MANIFEST_NAME}` (metrics) and `../report.md`.", ""]

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


def write_model_card(out_dir: str | Path, m: Manifest, model: str = "model") -> Path:
    """Write `out_dir/<model>/README.md` atomically; returns its path relative to `out_dir` for the manifest
    (list it with `output_record(out_dir, path, "card", deterministic=True)` before `write_manifest`)."""
    rel = Path(model) / CARD_NAME
    atomic_write_text(Path(out_dir) / rel, model_card(m))
    return rel
