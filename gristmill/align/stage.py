"""The frame the align training stages run in: processes, the stage contract, the input model folder and its tokenizer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gristmill.align import AlignError
from gristmill.align.models import check_same_template, describe_tokenizer, load_tokenizer, model_dir, recorded_template
from gristmill.config import to_dict
from gristmill.manifests import Manifest, begin_stage
from gristmill.train import parallel
from gristmill.train.checkpoint import discard_other_runs
from gristmill.train.spikes import event_counts
from gristmill.stages import spec


@dataclass
class AlignStart:
    manifest: Manifest | None  # the new manifest to fill (None when `done`)
    done: Manifest | None  # this exact stage already finished: skip
    model_dir: Path  # the input's Hugging Face folder (resolved)
    tokenizer: Any
    template: dict  # describe_tokenizer() of that tokenizer, recorded in the manifest


def start(stage: str, config: Any, inputs: dict[str, list[Path]], out: Path, *, force: bool,
          par: parallel.Parallel) -> AlignStart:
    """Check inputs and derive the id (rank 0 first), drop other runs' checkpoints, load the tokenizer and
    refuse one whose template differs from what the input stage recorded."""
    def begin():
        return begin_stage(stage, to_dict(config), inputs, out, expect=spec(stage).expect, force=force,
                           device=par.device.type, world_size=par.world_size)
    st = parallel.on_main(par, begin) or begin()
    # resolved: the same folder, named without the `recipes/../runs/x` a recipe-relative input leaves, so every
    # report that prints it prints it normalised
    src = model_dir(inputs["model"][0]).resolve()
    if st.done:
        return AlignStart(None, st.done, src, None, {})
    parallel.on_main(par, lambda: discard_other_runs(out, st.manifest.id, force=force))
    tok = load_tokenizer(src)
    info = describe_tokenizer(tok)
    check_same_template(info, recorded_template(inputs["model"][0]), where=str(src),
                        expected_from=f"{inputs['model'][0]}/manifest.json")
    return AlignStart(st.manifest, None, src, tok, info)


def check_context(model: Any, max_length: int, stage: str) -> None:
    """A max_length beyond the model's trained context is refused (RoPE would run, but on positions never seen)."""
    ctx = getattr(model.config, "max_position_embeddings", None)
    if ctx is not None and max_length > ctx:
        raise AlignError(f"{stage}.max_length={max_length} exceeds the model's context (max_position_embeddings="
                         f"{ctx}); lower it: --set {stage}.max_length={ctx}")


def run_metrics(result: Any, par: parallel.Parallel) -> dict[str, Any]:
    """The training loop's own figures, the same for every align stage's manifest."""
    events = result.state.events
    return {"steps": result.state.step, "final_train_loss": result.final_train_loss,
            "train_time_s": round(result.loop_time_s, 3), "step_time_s": round(result.compute_s, 3),
            "resumed_from_step": result.resumed_from, "peak_memory_mb": round(result.peak_memory_mb, 1),
            **event_counts(events),
            "device": par.device.type, "world_size": par.world_size}


def finish(out: Path, m: Manifest, files: dict[str, list[Path]], report: str, events: list[dict[str, Any]], *,
           plots: tuple[str, ...] = (), training_plot: bool = True,
           samples: list[dict[str, Any]] | None = None) -> None:
    """report.md, then the manifest listing the model files, the model card (model/README.md), metrics.jsonl,
    training.png (unless not `training_plot`) and `plots`, samples.jsonl (when `samples`: sample_rows(), which
    the run report joins across stages by prompt), and the report (written last)."""
    import json

    from gristmill.manifests import atomic_write_text, output_record, write_manifest
    from gristmill.manifests.card import write_model_card
    from gristmill.train.tracking import tracked_files

    m.events = events
    atomic_write_text(out / "report.md", report)
    if samples is not None:
        atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in samples))
    det = dict(deterministic=True)
    card = write_model_card(out, m) if "model" in files else None  # model/README.md, from m's config, inputs, metrics
    m.outputs = ([output_record(out, f, kind, **det) for kind, fs in files.items() for f in fs]
                 + ([output_record(out, card, "card", **det)] if card else [])
                 + [output_record(out, "metrics.jsonl", "metrics", **det),
                    output_record(out, "timings.jsonl", "log", deterministic=False)]
                 + ([output_record(out, "training.png", "plot", **det)] if training_plot else [])
                 + [output_record(out, f, "plot", **det) for f in plots]
                 + ([output_record(out, "samples.jsonl", "samples", records=len(samples), **det)]
                    if samples is not None else [])
                 + [output_record(out, f, "tracking", deterministic=False) for f in tracked_files(out)]
                 + [output_record(out, "report.md", "report", deterministic=False)])  # it quotes times and rates
    write_manifest(out, m)


def sample_rows(prompts: list[Any], before: list[str], after: list[str]) -> list[dict[str, Any]]:
    """samples.jsonl rows: each held-out prompt (its last user turn; `prompts` are SFT examples or judge.HeldOutPrompt),
    its checkable answer and task (None when it has none), and the greedy answers before / after training, each
    checked (None: nothing to check against)."""
    from gristmill.align.answers import answer_correct

    def check(p: Any, text: str) -> bool | None:
        return None if p.answer is None else bool(answer_correct(p, text))

    return [{"prompt": next((t["content"] for t in reversed(p.messages) if t["role"] == "user"), ""),
             "answer": p.answer, "task": p.task, "before": b, "after": a,
             "correct_before": check(p, b), "correct_after": check(p, a)} for p, b, a in zip(prompts, before, after)]


def load_split(load: Any, config: Any, inputs: dict[str, list[Path]], stage: str) -> tuple[list, list, dict]:
    """(train records, eval records, data summary for the manifest): `inputs["eval"]` when given, else a
    stable hash split of the data by `config.data.eval_fraction`. `load` is data.load_sft / load_preferences."""
    from gristmill.align.data import split_eval

    data = load(inputs["data"], config.data, stage=stage)
    summary: dict[str, Any] = {"data": data.summary()}
    if inputs.get("eval"):
        held = load(inputs["eval"], config.data, stage=stage)
        summary["eval_data"] = held.summary()
        return data.records, held.records, summary
    train, held_out = split_eval(data.records, config.data.eval_fraction)
    summary["eval_split"] = {"fraction": config.data.eval_fraction, "train": len(train), "eval": len(held_out)}
    return train, held_out, summary


def run_length(config: Any, per_epoch: int, stage: str) -> int:
    """Optimizer steps of this run: `max_steps`, or as many as `epochs` take; a warmup longer than the run is refused."""
    max_steps = config.max_steps or config.epochs * per_epoch
    if config.optim.warmup_steps > max_steps:
        raise AlignError(f"{stage}.optim.warmup_steps={config.optim.warmup_steps} exceeds the {max_steps} steps of "
                         f"this run; lower it (e.g. --set {stage}.optim.warmup_steps={max_steps // 10})")
    return max_steps


def rank_share(items: list[Any], par: parallel.Parallel) -> list[Any]:
    """This rank's share of held-out batches (every world_size-th, from its rank): the loop sums over ranks."""
    return items[par.rank::par.world_size]
