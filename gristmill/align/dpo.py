"""run_dpo: preference optimisation of the SFT model (DPO, IPO, RPO, SimPO, ORPO, KTO) with cached reference log-probs and a judged before/after."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gristmill.align import AlignError, fmt as _fmt, pct as _pct, plot_panels, samples_table
from gristmill.align.config import DPOConfig
from gristmill.align.data import Skipped
from gristmill.manifests import Manifest, read_manifest

def run_dpo(config: DPOConfig, inputs: dict[str, list[Path]], out_dir: Path, *, force: bool = False,
            hooks: Any = None) -> Manifest:
    """Train `inputs["model"][0]` (the SFT folder, also the reference) on `inputs["data"]` with `config.loss`.

    Held-out pairs come from `inputs["eval"]` or a stable hash split; `inputs["reward"]` (optional) judges
    the SFT model's and the new model's answers to held-out prompts. Resumes like every training stage.
    """
    from gristmill.train import parallel

    with parallel.session(config.device) as par:
        return _run(config, inputs, Path(out_dir), force=force, hooks=hooks, par=par)


@dataclasses.dataclass
class Item:
    """One training unit: a pair [chosen, rejected], or for KTO an example [completion, mismatched] (the
    completion of another example after this prompt, for KTO's KL reference point)."""
    seqs: list[Any]  # chat.Encoded
    desirable: bool | None = None  # kto only


def encode_items(tok: Any, records: list[Any], config: DPOConfig) -> tuple[list[Item], list[Skipped]]:
    """Pairs (or KTO examples) rendered with the chat template; only the compared completion is labelled.
    A record with an empty completion is an error, or a counted skip under data.on_error=skip."""
    from gristmill.align.chat import EmptyMaskError, encode_chat

    def enc(prompt: list[dict], reply: list[dict], where: str) -> Any:
        return encode_chat(tok, prompt + reply, max_length=config.max_length, where=where,
                           completion_turns=len(reply))

    items, skipped = [], []
    n = len(records)
    for i, r in enumerate(records):
        try:
            if config.loss == "kto":
                other = records[(i + n // 2) % n] if n > 1 else r  # a completion written for another prompt
                items.append(Item([enc(r.prompt, r.completion, r.source),
                                   enc(r.prompt, other.completion, f"{r.source} (mismatched)")], r.desirable))
            else:
                items.append(Item([enc(r.prompt, r.chosen, f"{r.source} (chosen)"),
                                   enc(r.prompt, r.rejected, f"{r.source} (rejected)")]))
        except EmptyMaskError as e:
            if config.data.on_error != "skip":
                raise AlignError(f"{e}; --set dpo.data.on_error=skip skips such records") from None
            skipped.append(Skipped(source=r.source, reason=str(e)))
    return items, skipped


def preference_loss(config: DPOConfig, sums: Any, means: Any, ref: Any, tokens: Any,
                    desirable: Any = None) -> tuple[Any, dict[str, Any]]:
    """(per-item loss (B,), per-item stats (B,) each) from the (2B,) completion log-probs of a batch laid out
    as [item 0: seq 0, seq 1; item 1: ...]; `ref` the reference's (2B,) sums (None without a reference).

    `config.loss` names an entry of losses.PREFERENCE_LOSSES, which says which aggregate the loss compares
    and whether it reads the reference. Implicit rewards are β (log π - log π_ref) in that aggregate, or
    β log π without a reference (SimPO, ORPO); accuracy = the chosen one's reward is higher (unpaired, KTO:
    the reward's sign matches the label)."""
    import torch

    from gristmill.align.losses import PREFERENCE_LOSSES, PreferenceInputs

    entry = PREFERENCE_LOSSES[config.loss]
    if entry.needs_reference and ref is None:
        raise AlignError(f"dpo.loss={config.loss} compares against the reference model, but no reference "
                         "log-probs were given")
    pol = sums if entry.uses == "sums" else means
    refs = None if not entry.needs_reference else ref if entry.uses == "sums" else ref / tokens
    x = PreferenceInputs(chosen=pol[0::2], rejected=pol[1::2],
                         ref_chosen=None if refs is None else refs[0::2],
                         ref_rejected=None if refs is None else refs[1::2],
                         chosen_mean=means[0::2], desirable=desirable)
    loss = entry.fn(x, config)

    def reward(policy: Any, reference: Any) -> Any:
        return config.beta * (policy if reference is None else policy - reference).detach()

    r_c = reward(x.chosen, x.ref_chosen)
    if entry.unpaired:
        right = torch.where(desirable, r_c > 0, r_c < 0).float()
        return loss, {"accuracy": right, "reward": r_c, "kl_reference_point": x.kl_reference_point().expand_as(r_c),
                      "logp": sums[0::2].detach()}
    r_r = reward(x.rejected, x.ref_rejected)
    return loss, {"accuracy": (r_c > r_r).float(), "margin": r_c - r_r, "reward_chosen": r_c,
                  "reward_rejected": r_r, "logp_chosen": sums[0::2].detach(), "logp_rejected": sums[1::2].detach()}


def _run(config: DPOConfig, inputs: dict[str, list[Path]], out: Path, *, force: bool, hooks: Any,
         par: Any) -> Manifest:
    import torch

    from gristmill.align.batches import ItemBatches
    from gristmill.align.chat import pad_id
    from gristmill.align.data import load_preferences, load_unpaired
    from gristmill.align.generate import generate
    from gristmill.align.judge import checked_accuracy, held_out_prompts, kl_to_reference, reward_verdict
    from gristmill.align.logprobs import TokenLogps, collate_logps, sequence_logps
    from gristmill.align.models import add_lora, load_causal_lm, save_outputs
    from gristmill.align.reference import cached_logps, model_sha256, sequences_sha256
    from gristmill.align.stage import (check_context, finish, load_split, rank_share, run_length, run_metrics,
                                       sample_rows, start)
    from gristmill.train import parallel
    from gristmill.train.loop import train
    from gristmill.pretrain.model import count_params
    from gristmill.pretrain.plots import plot_training, read_rows

    s = start("dpo", config, inputs, out, force=force, par=par)
    if s.done:
        return s.done
    m, tok = s.manifest, s.tokenizer
    kto = config.loss == "kto"

    train_recs, eval_recs, summary = load_split(load_unpaired if kto else load_preferences, config, inputs, "dpo")
    items, skip_train = encode_items(tok, train_recs, config)
    eval_items, skip_eval = encode_items(tok, eval_recs, config)
    if not items:
        raise AlignError("dpo: no training pair left; add data or lower --set dpo.data.eval_fraction")
    if kto and len({it.desirable for it in items}) < 2:
        raise AlignError("dpo.loss=kto needs both desirable and undesirable examples in the training data")
    pad = pad_id(tok)

    model = load_causal_lm(s.model_dir, pad=pad)
    check_context(model, config.max_length, "dpo")
    model.to(par.device)
    model.eval()  # the reference and the "before" answers: no dropout

    def collate(group: list[Item]) -> dict[str, Any]:
        return collate_logps([it.seqs for it in group], pad_id=pad, max_length=config.max_length,
                             packed=config.packing, device=par.device)

    @torch.no_grad()
    def logps_of(module: Any, groups: list[Item], batch_size: int) -> Any:
        sums = [sequence_logps(module, collate(groups[i:i + batch_size]))[0] for i in range(0, len(groups), batch_size)]
        return torch.cat(sums) if sums else torch.zeros(0)

    # -- the reference: cached log-probs of the SFT model, or the policy with its adapters off at each step
    reference: dict[str, Any] = {"mode": None}
    ref_train = ref_eval = None
    if config.uses_reference and config.reference == "cache":
        parts = {"reference_model": model_sha256(inputs["model"][0], s.model_dir),
                 "sequences": sequences_sha256([it.seqs for it in items] + [[]] + [it.seqs for it in eval_items]),
                 "template": s.template.get("chat_template_sha256"), "max_length": config.max_length,
                 "truncation": "chat.truncate/completion", "kind": "kto" if kto else "pairs"}
        cache_dir = Path(config.cache_dir) if config.cache_dir else out.resolve().parent / ".cache" / "reference-logps"

        def compute() -> dict[str, Any]:
            scorer = TokenLogps(model)
            return {"train": logps_of(scorer, items, config.batch_size),
                    "eval": logps_of(scorer, eval_items, config.batch_size)}

        def load_cache() -> tuple[dict[str, Any], Path, bool]:
            return cached_logps(cache_dir, parts, compute)

        first = parallel.on_main(par, load_cache)  # rank 0 computes and writes; the others then read
        tensors, path, hit = first if first is not None else load_cache()
        ref_train, ref_eval = tensors["train"].to(par.device), tensors["eval"].to(par.device)
        reference = {"mode": "cache", "path": str(path), "hit": hit, "key": path.stem, "parts": parts}
        if par.main:
            print(f"dpo: reference log-probs {'read from' if hit else 'computed into'} {path}")
    elif config.uses_reference:
        reference = {"mode": "adapter"}

    judged = held_out_prompts(eval_recs, config.judge_prompts)
    shown = judged[:config.samples]

    def answers(prompts: list[Any], sample_seed: int | None = None) -> list[str]:
        return generate(model, tok, [p.messages for p in prompts], max_new_tokens=config.max_new_tokens,
                        max_length=config.max_length, device=par.device, sample_seed=sample_seed) if prompts else []

    answers_before = answers(judged)

    if config.lora.enabled:
        model = add_lora(model, config.lora, task_type="CAUSAL_LM", seed=config.seed)
    model.train()
    policy = TokenLogps(model)
    forward = parallel.wrap(policy, par, fsdp=False, compile=False)
    counts = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def batch_of(store: list[Item], ref_all: Any, ids: list[int]) -> dict[str, Any]:
        b = collate([store[i] for i in ids])
        if ref_all is not None:
            b["ref"] = ref_all.view(-1, 2)[torch.tensor(ids, device=ref_all.device)].reshape(-1)  # (2B,)
        if kto:
            b["desirable"] = torch.tensor([store[i].desirable for i in ids], device=par.device)
        return b

    @torch.no_grad()
    def adapter_off_logps(b: dict[str, Any]) -> Any:
        with model.disable_adapter():
            return sequence_logps(policy, b)[0]

    def loss_and_stats(fwd: Any, b: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        sums, means = sequence_logps(fwd, b)
        ref = b.get("ref")
        if ref is None and reference["mode"] == "adapter":
            ref = adapter_off_logps(b)
        return preference_loss(config, sums, means, ref, b["tokens"], b.get("desirable"))

    def loss_fn(fwd: Any, b: dict[str, Any]) -> tuple[Any, int, dict[str, Any]]:
        loss, stats = loss_and_stats(fwd, b)
        return loss.sum(), loss.shape[0], {k: v.sum() for k, v in stats.items()}

    batches = ItemBatches(len(items), lambda ids: batch_of(items, ref_train, ids), seed=config.seed,
                          batch_size=config.batch_size, grad_accum=config.grad_accum, rank=par.rank,
                          world_size=par.world_size)
    max_steps = run_length(config, batches.steps_per_epoch(), "dpo")
    eval_batches = rank_share([batch_of(eval_items, ref_eval, list(range(i, min(i + config.batch_size, len(eval_items)))))
                               for i in range(0, len(eval_items), config.batch_size)], par)

    if par.main:
        print(f"dpo ({config.loss}): {len(items):,} {'examples' if kto else 'pairs'}, {len(eval_items):,} held out; "
              f"{max_steps:,} steps; {trainable:,} of {counts['params']:,} parameters trained "
              f"({'LoRA' if config.lora.enabled else 'full'}); reference: {reference['mode'] or 'none'}")
    result = train(config, model, forward, par, batches, loss_fn, out_dir=out, run_id=m.id, stage="dpo",
                   max_steps=max_steps, eval_batches=eval_batches if eval_items else None,
                   steps_per_epoch=batches.steps_per_epoch(), unit="examples" if kto else "pairs", hooks=hooks)
    st = result.state
    final = dict(st.evals)

    # -- before / after on held-out prompts
    model.eval()
    answers_after = answers(judged)
    verdict = (reward_verdict(Path(inputs["reward"][0]) / "model", judged, answers_before, answers_after,
                              max_length=config.max_length, device=par.device)
               if inputs.get("reward") and judged else {})
    kl = None
    if judged and config.uses_reference:
        def policy_logps(groups: list[list[Any]]) -> Any:
            return sequence_logps(policy, collate_logps(groups, pad_id=pad, max_length=config.max_length,
                                                        packed=True, device=par.device))[0]

        sft: list[Any] = []  # full fine-tuning: the SFT weights again, loaded once (training is over)

        def reference_logps(groups: list[list[Any]]) -> Any:
            b = collate_logps(groups, pad_id=pad, max_length=config.max_length, packed=True, device=par.device)
            if config.lora.enabled:
                with model.disable_adapter():
                    return sequence_logps(policy, b)[0]
            if not sft:
                sft.append(TokenLogps(load_causal_lm(s.model_dir, pad=pad).to(par.device).eval()))
            return sequence_logps(sft[0], b)[0]

        kl = kl_to_reference(policy_logps, reference_logps, tok, judged, answers(judged, sample_seed=config.seed),
                             max_length=config.max_length)
    acc_before, n_checked = checked_accuracy(judged, answers_before)
    acc_after, _ = checked_accuracy(judged, answers_after)

    def write_outputs() -> None:
        files = save_outputs(model, out, tokenizer_dir=s.model_dir)
        abandoned: list[dict[str, Any]] = []
        rows = read_rows(out / "metrics.jsonl", abandoned=abandoned)
        plot_training(rows, st.events, out / "training.png", title=f"dpo ({config.loss}) {m.id}",
                      abandoned=abandoned, eval_key="eval_loss", loss_unit="nats/pair")
        plot_preferences(rows, out / "preferences.png", title=f"dpo ({config.loss}) {m.id}")
        m.metrics = {
            "template": s.template,
            **run_metrics(result, par),
            **summary,
            "loss": config.loss,
            "reference": reference,
            "pairs_train" if not kto else "examples_train": len(items),
            "pairs_eval" if not kto else "examples_eval": len(eval_items),
            "skipped_no_assistant_tokens": len(skip_train) + len(skip_eval),
            "skipped_lines": [dataclasses.asdict(k) for k in (skip_train + skip_eval)[:100]],
            "truncated": sum(e.truncated for it in items + eval_items for e in it.seqs),
            "epochs": st.cursor / len(items),
            **final,
            "examples_per_s" if kto else "pairs_per_s": result.units_per_s,
            "kl_to_reference": kl,
            **verdict,
            "answers_checked": n_checked,
            "answer_accuracy_before": acc_before,
            "answer_accuracy": acc_after,
            "params": counts["params"],
            "trainable_params": trainable,
            "lora": config.lora.enabled,
            "samples": [{"prompt": p.messages[-1]["content"], "before": b, "after": a}
                        for p, b, a in zip(shown, answers_before, answers_after)],
        }
        finish(out, m, files, _report(m, s.model_dir), st.events, plots=("preferences.png",),
               samples=sample_rows(judged, answers_before, answers_after))

    parallel.on_main(par, write_outputs)
    return read_manifest(out)


def plot_preferences(rows: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """accuracy, margin, and the chosen / rejected log-probs against step, train and held-out."""
    panels = [("implicit-reward accuracy", ["accuracy"]), ("margin r(chosen) - r(rejected)", ["margin"]),
              ("completion log-prob (sum)", ["logp_chosen", "logp_rejected"])]
    plot_panels(path, rows, [(name, [(prefix + k, style, f"{prefix[:-1]} {k}") for k in keys
                                     for prefix, style in (("train_", "-"), ("eval_", "o--"))])
                             for name, keys in panels], title=title, xlabel="step", shape=(1, 3))


def _report(m: Manifest, base: Path) -> str:
    from gristmill.align.judge import win_rate_text

    mt, c = m.metrics, m.config
    kto = mt["loss"] == "kto"
    n_train = mt.get("examples_train" if kto else "pairs_train")
    n_eval = mt.get("examples_eval" if kto else "pairs_eval")
    ref = mt["reference"]
    ref_txt = {"cache": f"cached log-probs of the SFT model (`{ref.get('path')}`, "
                        f"{'reused' if ref.get('hit') else 'computed in this run'})",
               "adapter": "the policy with its LoRA adapters disabled", None: "none (this loss needs none)"}[ref["mode"]]
    lines = [
        f"# dpo ({mt['loss']}) {m.id}", "",
        f"`{base}` ({mt['params']:,} parameters; {mt['trainable_params']:,} trained, "
        f"{'LoRA r=' + str(c['lora']['r']) if mt['lora'] else 'full fine-tuning'}) trained with `{mt['loss']}` "
        f"(beta {c['beta']}) on {n_train:,} {'examples' if kto else 'pairs'}; {n_eval:,} held out. "
        f"Reference: {ref_txt}.", "",
        "| held-out metric (last evaluation) | value |", "| --- | --- |",
        f"| loss | {_fmt(mt.get('eval_loss'))} |",
        f"| implicit-reward accuracy | {_pct(mt.get('eval_accuracy'))} |",
    ]
    if not kto:
        lines += [f"| mean margin r(chosen) - r(rejected) | {_fmt(mt.get('eval_margin'))} |",
                  f"| log-prob of chosen / rejected (sum) | {_fmt(mt.get('eval_logp_chosen'), '.2f')} / "
                  f"{_fmt(mt.get('eval_logp_rejected'), '.2f')} |"]
    lines += [f"| KL to the reference (nats per answer, sampled) | {_fmt(mt.get('kl_to_reference'))} |", ""]
    if mt.get("judged_prompts"):
        lines += [
            f"## Before / after, judged by the reward model ({mt['judged_prompts']} held-out prompts, greedy)", "",
            "| | SFT | this model |", "| --- | --- | --- |",
            f"| mean reward | {_fmt(mt['reward_before'])} | {_fmt(mt['reward_after'])} |",
            f"| mean answer length (tokens) | {_fmt(mt['answer_tokens_before'], '.1f')} | "
            f"{_fmt(mt['answer_tokens_after'], '.1f')} |", "",
            win_rate_text(mt) + " A win rate that holds only among longer answers was bought with length.", ""]
    if mt.get("answers_checked"):
        lines += [f"Exact-answer accuracy on {mt['answers_checked']} checkable held-out prompts: "
                  f"{_pct(mt['answer_accuracy_before'])} (SFT) -> {_pct(mt['answer_accuracy'])}.", ""]
    lines += [
        f"Trained {mt['steps']:,} steps ({mt['epochs']:.2f} epochs) at "
        f"{_fmt(mt.get('examples_per_s' if kto else 'pairs_per_s'), ',.2f')} "
        f"{'examples' if kto else 'pairs'}/s; final train loss {_fmt(mt['final_train_loss'])}; "
        f"{mt['spikes_skipped']} spikes skipped, {mt['rollbacks']} rollbacks; {mt['truncated']} sequences truncated.", "",
        "![loss, learning rate and gradient norm](training.png)", "",
        "![accuracy, margins and log-probs](preferences.png)", "",
        "A falling log-prob of the *chosen* answers (right panel) is the known failure of plain DPO: both answers "
        "lose probability and the margin grows anyway; `--set dpo.loss=rpo` adds an NLL term against it.", "",
    ]
    lines += samples_table(mt["samples"], "SFT", "this model")
    lines += ["`model/` is the merged model (`AutoModelForCausalLM.from_pretrained`); `adapter/` the LoRA adapter "
              "alone; `metrics.jsonl` the per-step log with train_* and eval_* columns.", ""]
    return "\n".join(lines)
