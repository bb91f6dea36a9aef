"""run_sft: supervised fine-tuning on chat data: loss on assistant tokens only, packed rows, LoRA or full, exact resume."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gristmill.align import AlignError, fmt as _fmt, pct as _pct, samples_table
from gristmill.align.answers import answer_correct
from gristmill.align.config import SFTConfig
from gristmill.align.data import SFTExample, Skipped, load_sft
from gristmill.manifests import Manifest, read_manifest
from gristmill.manifests.inputs import report_path


def run_sft(config: SFTConfig, inputs: dict[str, list[Path]], out_dir: Path, *, force: bool = False,
            hooks: Any = None) -> Manifest:
    """Fine-tune the model `inputs["model"][0]` (a pretrain folder or a HF folder) on `inputs["data"]`.

    Held-out examples come from `inputs["eval"]` or a stable hash split of the data. Resumes from
    out_dir/checkpoints of this same run; `force` starts clean. `hooks`: the tests' injection point.
    """
    from gristmill.train import parallel

    with parallel.session(config.device) as par:
        return _run(config, inputs, Path(out_dir), force=force, hooks=hooks, par=par)


def encode_examples(tok: Any, examples: list[SFTExample], config: SFTConfig) -> tuple[list[Any], list[Skipped]]:
    """encode_chat for each example; one with nothing to train on is an error, or a counted skip under
    data.on_error=skip (never silently trained on)."""
    from gristmill.align.chat import EmptyMaskError, encode_chat

    out, skipped = [], []
    for ex in examples:
        try:
            out.append(encode_chat(tok, ex.messages, max_length=config.max_length, where=ex.source))
        except EmptyMaskError as e:
            if config.data.on_error != "skip":
                raise AlignError(f"{e}; --set sft.data.on_error=skip skips such records") from None
            skipped.append(Skipped(source=ex.source, reason=str(e)))
    return out, skipped


def sft_loss(forward: Any, batch: dict[str, Any]) -> tuple[Any, int, dict[str, Any]]:
    """(summed NLL of the supervised tokens, their count, {"token_accuracy": tokens predicted right}) for one
    collated batch; the loop logs train_ / eval_token_accuracy from it.

    Logits are computed only at the positions that predict a supervised token (a boolean
    `logits_to_keep`), which skips the (B, T, V) head output over prompts and padding."""
    import torch

    from gristmill.align.chat import IGNORE
    from gristmill.align.losses import token_nll

    labels = batch["labels"]  # (B, T), unshifted
    keep = labels.new_zeros(labels.shape, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE  # position t predicts token t+1
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = forward(**inputs, logits_to_keep=keep).logits  # (N, V): the kept positions, row-major
    targets = labels[:, 1:][keep[:, :-1]]  # (N,)
    loss, n = token_nll(logits, targets)
    return loss, n, {"token_accuracy": (logits.detach().argmax(-1) == targets).sum()}


def _run(config: SFTConfig, inputs: dict[str, list[Path]], out: Path, *, force: bool, hooks: Any, par: Any) -> Manifest:

    from gristmill.align.batches import ItemBatches
    from gristmill.align.chat import pad_id
    from gristmill.align.generate import generate
    from gristmill.align.models import add_lora, load_causal_lm, save_outputs
    from gristmill.align.packing import collate, pack
    from gristmill.align.stage import (check_context, finish, load_split, rank_share, run_length, run_metrics,
                                       sample_rows, start)
    from gristmill.train import parallel
    from gristmill.train.loop import train
    from gristmill.train.trainer import evaluate_loss
    from gristmill.pretrain.model import count_params
    from gristmill.pretrain.plots import plot_training, read_rows

    s = start("sft", config, inputs, out, force=force, par=par)
    if s.done:
        return s.done
    m, tok = s.manifest, s.tokenizer

    train_ex, eval_ex, data_summary = load_split(load_sft, config, inputs, "sft")
    if not train_ex:
        raise AlignError(f"sft: no training example left after the eval split of {len(eval_ex)}; add data or "
                         "lower --set sft.data.eval_fraction")
    enc_train, skip_train = encode_examples(tok, train_ex, config)
    enc_eval, skip_eval = encode_examples(tok, eval_ex, config)
    if not enc_train:
        raise AlignError("sft: every training example was skipped (no assistant tokens); see the data files")
    pad = pad_id(tok)
    lengths = [len(e.input_ids) for e in enc_train]
    rows = pack(lengths, config.max_length) if config.packing else [[i] for i in range(len(enc_train))]
    eval_rows = (pack([len(e.input_ids) for e in enc_eval], config.max_length) if config.packing
                 else [[i] for i in range(len(enc_eval))])

    def collate_rows(examples: list[Any], row_ids: list[list[int]]) -> dict[str, Any]:
        if config.packing:
            return collate(examples, pad_id=pad, packed=True, rows=row_ids, device=par.device)
        return collate([examples[r[0]] for r in row_ids], pad_id=pad, packed=False, device=par.device)

    row_tokens = [sum(lengths[i] for i in r) for r in rows]
    batches = ItemBatches(len(rows), lambda ids: collate_rows(enc_train, [rows[i] for i in ids]), seed=config.seed,
                          batch_size=config.batch_size, grad_accum=config.grad_accum, rank=par.rank,
                          world_size=par.world_size)
    max_steps = run_length(config, batches.steps_per_epoch(), "sft")
    eval_batches = rank_share([collate_rows(enc_eval, eval_rows[i:i + config.batch_size])
                               for i in range(0, len(eval_rows), config.batch_size)], par)

    model = load_causal_lm(s.model_dir, pad=pad)
    check_context(model, config.max_length, "sft")
    model.to(par.device)
    checkable = [ex for ex in eval_ex if ex.answer is not None][:config.eval_generate]
    shown = eval_ex[:config.samples]

    def prompts_of(exs: list[SFTExample]) -> list[list[dict]]:
        return [ex.messages[:max(i for i, msg in enumerate(ex.messages) if msg["role"] == "assistant")] for ex in exs]

    def ask(exs: list[SFTExample]) -> list[str]:
        return generate(model, tok, prompts_of(exs), max_new_tokens=config.max_new_tokens,
                        max_length=config.max_length, device=par.device) if exs else []

    before = evaluate_loss(model, par, eval_batches, sft_loss, config.dtype) if enc_eval else {}
    answers_before = ask(checkable)
    samples_before = ask(shown)
    if config.lora.enabled:
        model = add_lora(model, config.lora, task_type="CAUSAL_LM", seed=config.seed)
    counts = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    forward = parallel.wrap(model, par, fsdp=False, compile=False)
    if par.main:
        print(f"sft: {len(enc_train):,} examples in {len(rows):,} rows ({'packed' if config.packing else 'padded'}), "
              f"{len(enc_eval):,} held out; {max_steps:,} steps; {trainable:,} of {counts['params']:,} parameters "
              f"trained ({'LoRA' if config.lora.enabled else 'full'})")

    result = train(config, model, forward, par, batches, sft_loss, out_dir=out, run_id=m.id, stage="sft",
                   max_steps=max_steps, eval_batches=eval_batches if enc_eval else None,
                   steps_per_epoch=batches.steps_per_epoch(), unit="tokens", hooks=hooks)
    st = result.state
    answers_after = ask(checkable)
    samples_after = ask(shown)
    served_tokens = sum(row_tokens[i] for i in batches.served)

    def accuracy(answers: list[str]) -> float | None:
        return sum(answer_correct(ex, a) for ex, a in zip(checkable, answers)) / len(checkable) if checkable else None

    def write_outputs() -> None:
        files = save_outputs(model, out, tokenizer_dir=s.model_dir)
        abandoned: list[dict[str, Any]] = []
        rows_logged = read_rows(out / "metrics.jsonl", abandoned=abandoned)
        plot_training(rows_logged, st.events, out / "training.png", title=f"sft {m.id}", abandoned=abandoned,
                      eval_key="eval_loss")
        m.metrics = {
            "template": s.template,
            **run_metrics(result, par),
            **data_summary,
            "examples_train": len(enc_train),
            "examples_eval": len(enc_eval),
            "skipped_no_assistant_tokens": len(skip_train) + len(skip_eval),
            "skipped_lines": [dataclasses.asdict(k) for k in (skip_train + skip_eval)[:100]],
            "truncated": sum(e.truncated for e in enc_train + enc_eval),
            "rows": len(rows),
            "packing": config.packing,
            "packing_efficiency": sum(lengths) / (len(rows) * config.max_length) if config.packing else None,
            "epochs": st.cursor / len(rows),
            "eval_loss_before": before.get("eval_loss"),
            "eval_loss": st.evals.get("eval_loss"),
            "eval_token_accuracy_before": before.get("eval_token_accuracy"),
            "eval_token_accuracy": st.evals.get("eval_token_accuracy"),
            "answers_checked": len(checkable),
            "answer_accuracy_before": accuracy(answers_before),
            "answer_accuracy": accuracy(answers_after),
            "supervised_tokens_seen": st.seen,
            "supervised_tokens_per_s": result.units_per_s,
            "tokens_per_s": served_tokens / result.compute_s if result.compute_s else None,
            "params": counts["params"],
            "trainable_params": trainable,
            "lora": config.lora.enabled,
            "samples": [{"prompt": p[-1]["content"], "before": b, "after": a}
                        for p, b, a in zip(prompts_of(shown), samples_before, samples_after)],
        }
        # samples.jsonl: every checked prompt (base -> SFT answers), then any shown one that was not checked
        extra = [k for k, ex in enumerate(shown) if not any(ex is c for c in checkable)]
        answered = sample_rows(checkable + [shown[k] for k in extra], answers_before + [samples_before[k] for k in extra],
                               answers_after + [samples_after[k] for k in extra])
        finish(out, m, files, _report(m, report_path(s.model_dir, out)), st.events, samples=answered)

    parallel.on_main(par, write_outputs)
    return read_manifest(out)


def _report(m: Manifest, base: str) -> str:
    mt, c = m.metrics, m.config
    lines = [
        f"# sft {m.id}", "",
        f"Fine-tuned `{base}` ({mt['params']:,} parameters; {mt['trainable_params']:,} trained, "
        f"{'LoRA r=' + str(c['lora']['r']) if mt['lora'] else 'full fine-tuning'}) on {mt['examples_train']:,} "
        f"examples ({mt['rows']:,} {'packed rows' if mt['packing'] else 'rows'}), {mt['examples_eval']:,} held out.", "",
        "| metric | before | after |", "| --- | --- | --- |",
        f"| eval loss (assistant tokens) | {_fmt(mt['eval_loss_before'])} | {_fmt(mt['eval_loss'])} |",
        f"| eval token accuracy | {_pct(mt['eval_token_accuracy_before'])} | {_pct(mt['eval_token_accuracy'])} |",
        f"| exact-answer accuracy ({mt['answers_checked']} checkable, greedy) | {_pct(mt['answer_accuracy_before'])} "
        f"| {_pct(mt['answer_accuracy'])} |", "",
        "| run | value |", "| --- | --- |",
        f"| steps | {mt['steps']:,} ({mt['epochs']:.2f} epochs) |",
        f"| final train loss (mean of last 10 steps) | {_fmt(mt['final_train_loss'])} |",
        f"| throughput | {_fmt(mt['tokens_per_s'], ',.0f')} tokens/s ({_fmt(mt['supervised_tokens_per_s'], ',.0f')} "
        f"supervised) on {mt['world_size']} x {mt['device']} |",
        f"| packing efficiency | {_pct(mt['packing_efficiency'])} |",
        f"| truncated / skipped examples | {mt['truncated']} / {mt['skipped_no_assistant_tokens']} |",
        f"| spikes skipped / rollbacks | {mt['spikes_skipped']} / {mt['rollbacks']} |", "",
        "![loss, learning rate and gradient norm](training.png)", "",
    ]
    lines += samples_table(mt["samples"], "before", "after")
    lines += ["`model/` is the merged model (loads with `AutoModelForCausalLM.from_pretrained`); `adapter/` the LoRA "
              "adapter alone (peft format); `metrics.jsonl` the per-step log.", ""]
    return "\n".join(lines)
