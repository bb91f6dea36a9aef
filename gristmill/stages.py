"""The table of built-in stages: name, input roles (CLI flags), and where the code lives.

Code is named by string and imported only when the stage runs, so `gristmill --help` does not
import torch. Stages read their own roles here (`spec(name).expect`); the planner (runs.py) sits
above this table.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from gristmill.manifests import RAW, Manifest


@dataclass(frozen=True)
class Role:
    name: str
    flag: str  # the CLI flag of the stage's own command
    accepts: tuple[str, ...]  # upstream stage names, and/or RAW for a file or folder gristmill did not make
    many: bool = False
    required: bool = True
    help: str = ""


@dataclass(frozen=True)
class StageSpec:
    name: str
    help: str
    roles: tuple[Role, ...]
    config: str | type  # "module:Class", or the class itself (tests register fakes this way)
    run: str | Callable[..., Manifest]  # run(config, inputs, out_dir, *, force) -> Manifest
    group: str | None = None  # CLI group: `gristmill align sft`
    tools: tuple[tuple[str, str], ...] = ()  # extra commands: (name, "module:main(argv) -> int"), e.g. tokenize export

    @property
    def expect(self) -> dict[str, tuple[str, ...]]:
        return {r.name: r.accepts for r in self.roles}

    def config_cls(self) -> type:
        return self.config if isinstance(self.config, type) else _load(self.config)

    def run_fn(self) -> Callable[..., Manifest]:
        return self.run if callable(self.run) else _load(self.run)


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


BUILTIN: tuple[StageSpec, ...] = (
    StageSpec(
        name="reference-lm", help="clean text -> n-gram reference LM (ARPA) for curate's perplexity filter",
        roles=(Role("text", "--text", accepts=(RAW,), many=True,
                    help="clean reference text: .txt (one document per line) or .jsonl(.gz/.zst) with 'text'"),),
        config="gristmill.curate.config:ReferenceConfig", run="gristmill.curate.model_stages:run_reference"),
    StageSpec(
        name="quality-model", help="reference text vs raw web -> fastText quality classifier for curate",
        roles=(Role("positive", "--positive", accepts=(RAW,), many=True, help="reference-quality text (.txt / .jsonl)"),
               Role("negative", "--negative", accepts=(RAW,), many=True,
                    help="raw web text (.txt / .jsonl), or web dumps (WARC / .html / Parquet) whose pages are extracted"),
               Role("reference", "--reference", accepts=("reference-lm", RAW), required=False,
                    help="reference LM whose perplexity joins the quality score (curate must then use the same one)")),
        config="gristmill.curate.config:QualityModelConfig", run="gristmill.curate.model_stages:run_quality_model"),
    StageSpec(
        name="curate", help="web dump -> language ID, boilerplate removal, filters, dedup, ledger",
        roles=(Role("data", "--input", accepts=(RAW,), many=True, help="WARC/WET/JSONL/Parquet files, globs or folders"),
               Role("reference", "--reference", accepts=("reference-lm", RAW), required=False,
                    help="reference LM for the perplexity filter: a reference-lm folder, an ARPA/KenLM file "
                         "or a causal LM folder"),
               Role("quality", "--quality-model", accepts=("quality-model", RAW), required=False,
                    help="quality classifier: a quality-model folder or a fastText model"),
               Role("decontaminate", "--decontaminate", accepts=(RAW,), many=True, required=False,
                    help="evaluation sets (JSONL / JSON / Parquet / text): documents sharing a 13-word n-gram "
                         "with one are dropped (curate.decontamination)"),
               Role("truth", "--truth", accepts=(RAW,), required=False,
                    help="ground truth of a generated dump (the demo's truth.jsonl): the report measures "
                         "language ID, dedup, spam and extraction against it")),
        config="gristmill.curate.config:CurateConfig", run="gristmill.curate.run:run_curate"),
    StageSpec(
        name="tokenize", help="curated documents -> BPE tokenizer + memory-mapped token shards",
        roles=(Role("data", "--input", accepts=("curate",), help="a finished curate folder"),
               Role("tokenizer", "--tokenizer", accepts=(RAW, "tokenize"), required=False,
                    help="use this tokenizer folder / tokenizer.json instead of training one")),
        config="gristmill.tokenize.config:TokenizeConfig", run="gristmill.tokenize.run:run_tokenize",
        tools=(("export", "gristmill.tokenize.export:main"),)),
    StageSpec(
        name="pretrain", help="token shards -> base model (Hugging Face folder)",
        roles=(Role("data", "--data", accepts=("tokenize",), many=True,
                    help="finished tokenize folders, one tokenizer; several = a mixture (pretrain.mixture)"),),
        config="gristmill.pretrain.config:PretrainConfig", run="gristmill.pretrain.run:run_pretrain"),
    StageSpec(
        name="sft", help="base model + instructions -> SFT model", group="align",
        roles=(Role("model", "--model", accepts=("pretrain", "sft", RAW),
                    help="base model: a pretrain folder or a local Hugging Face model folder"),
               Role("data", "--data", accepts=(RAW,), many=True,
                    help="SFT JSONL / JSON (.gz, .zst): {instruction, input?, response}, {messages}, self-instruct tasks"),
               Role("eval", "--eval", accepts=(RAW,), many=True, required=False,
                    help="held-out SFT data; default: a stable hash split of --data (sft.data.eval_fraction)")),
        config="gristmill.align.config:SFTConfig", run="gristmill.align.sft:run_sft"),
    StageSpec(
        name="reward", help="SFT model + preference pairs -> reward model (Bradley-Terry)", group="align",
        roles=(Role("model", "--model", accepts=("sft", "pretrain", RAW),
                    help="the SFT model folder (or a local Hugging Face causal LM folder)"),
               Role("data", "--data", accepts=(RAW,), many=True,
                    help="preference JSONL / JSON: {prompt, chosen, rejected} (strings or messages) or Anthropic HH"),
               Role("eval", "--eval", accepts=(RAW,), many=True, required=False,
                    help="held-out pairs; default: a stable hash split of --data (reward.data.eval_fraction)")),
        config="gristmill.align.config:RewardConfig", run="gristmill.align.reward:run_reward"),
    StageSpec(
        name="dpo", help="SFT model + preference pairs -> aligned model (DPO, IPO, RPO, SimPO, ORPO, KTO)",
        group="align",
        roles=(Role("model", "--model", accepts=("sft", RAW), help="the SFT model folder (also the reference)"),
               Role("data", "--data", accepts=(RAW,), many=True,
                    help="preference JSONL / JSON (kto: also unpaired {prompt, completion, label})"),
               Role("eval", "--eval", accepts=(RAW,), many=True, required=False,
                    help="held-out pairs; default: a stable hash split of --data (dpo.data.eval_fraction)"),
               Role("reward", "--reward", accepts=("reward",), required=False,
                    help="a reward model folder that judges the SFT model's and the new model's answers")),
        config="gristmill.align.config:DPOConfig", run="gristmill.align.dpo:run_dpo"),
    StageSpec(
        name="ppo", help="SFT model + prompts + reward model or checker -> aligned model (PPO, GRPO, RLOO)",
        group="align",
        roles=(Role("model", "--model", accepts=("sft", RAW), help="the SFT model folder (policy and reference)"),
               Role("data", "--data", accepts=(RAW,), many=True,
                    help="prompt JSONL / JSON: {prompt} or {messages}, optional answer / task; or HH / preference records"),
               Role("eval", "--eval", accepts=(RAW,), many=True, required=False,
                    help="held-out prompts; default: a stable hash split of --data (ppo.data.eval_fraction)"),
               Role("reward", "--reward", accepts=("reward",), required=False,
                    help="the reward model folder (ppo.reward=model); it also judges the before / after")),
        config="gristmill.align.config:PPOConfig", run="gristmill.align.ppo:run_ppo"),
    StageSpec(
        name="eval", help="a model + benchmark task files -> scores (CORE, MMLU, HellaSwag, ARC, PIQA, GSM8K, IFEval ...)",
        roles=(Role("model", "--model", accepts=("pretrain", "sft", "dpo", "ppo", RAW),
                    help="the model: a pretrain / sft / dpo / ppo folder or a local Hugging Face causal LM folder"),
               Role("data", "--data", accepts=(RAW,), many=True, required=False,
                    help="benchmark data: a folder laid out like ../shared/data/benchmarks and/or task files "
                         "(JSONL) of your own, named in --tasks as FILE:FORMAT"),
               Role("reward", "--reward", accepts=("reward", RAW), required=False,
                    help="a reward model folder: judges alpaca_eval's answers against its reference answers")),
        config="gristmill.eval.config:EvalConfig", run="gristmill.eval.run:run_eval"),
)


def spec(name: str) -> StageSpec:
    """The built-in stage called `name` (its roles give `expect` for `begin_stage`)."""
    for s in BUILTIN:
        if s.name == name:
            return s
    raise KeyError(f"no built-in stage {name!r}; known: {', '.join(s.name for s in BUILTIN)}")
