"""run_reward: a Bradley-Terry reward model on preference pairs, initialised from the SFT model, with its length bias measured."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from gristmill.align import AlignError, fmt as _fmt, pct as _pct
from gristmill.align.config import RewardConfig
from gristmill.align.data import PreferencePair, Skipped, load_preferences
from gristmill.manifests import Manifest, read_manifest
from gristmill.manifests.inputs import report_path


def run_reward(config: RewardConfig, inputs: dict[str, list[Path]], out_dir: Path, *, force: bool = False,
               hooks: Any = None) -> Manifest:
    """Train a one-output sequence classifier from `inputs["model"][0]` (the SFT folder) on `inputs["data"]`.

    Held-out pairs come from `inputs["eval"]` or a stable hash split. Resumes like every training stage.
    """
    from gristmill.train import parallel

    with parallel.session(config.device) as par:
        return _run(config, inputs, Path(out_dir), force=force, hooks=hooks, par=par)


@dataclasses.dataclass
class EncodedPair:
    chosen: list[int]
    rejected: list[int]
    chosen_len: int  # response tokens (the compared reply), for the length-bias measures
    rejected_len: int
    margin: float
    truncated: bool


def encode_pairs(tok: Any, pairs: list[PreferencePair], config: RewardConfig) -> tuple[list[EncodedPair], list[Skipped]]:
    """Both sides rendered with the chat template (prompt + response); a long one loses the prompt's start
    and the response's end (chat.truncate around the response)."""
    from gristmill.align.chat import IGNORE, EmptyMaskError, encode_chat

    out, skipped = [], []
    for p in pairs:
        try:
            c = encode_chat(tok, p.prompt + p.chosen, max_length=config.max_length, where=f"{p.source} (chosen)",
                            completion_turns=len(p.chosen))
            r = encode_chat(tok, p.prompt + p.rejected, max_length=config.max_length,
                            where=f"{p.source} (rejected)", completion_turns=len(p.rejected))
        except EmptyMaskError as e:
            if config.data.on_error != "skip":
                raise AlignError(f"{e}; --set reward.data.on_error=skip skips such pairs") from None
            skipped.append(Skipped(source=p.source, reason=str(e)))
            continue
        out.append(EncodedPair(chosen=c.input_ids, rejected=r.input_ids,
                               chosen_len=sum(t != IGNORE for t in c.labels),
                               rejected_len=sum(t != IGNORE for t in r.labels),
                               margin=config.margin if p.margin is None else float(p.margin),
                               truncated=c.truncated or r.truncated))
    return out, skipped


def collate_pairs(pairs: list[EncodedPair], *, pad_id: int, max_length: int, packed: bool = True,
                  device: Any = None) -> dict[str, Any]:
    """One batch of B pairs: each pair's prompt once, then its chosen and rejected tails
    (scoring.collate_groups; rows of max_length tokens when packed), and the (B,) margins."""
    import torch

    from gristmill.align.scoring import collate_groups

    batch = collate_groups([[p.chosen, p.rejected] for p in pairs], pad_id=pad_id, max_length=max_length,
                           packed=packed, device=device)
    batch["margin"] = torch.tensor([p.margin for p in pairs], dtype=torch.float32, device=device)
    return batch


def rewards(scorer: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """(r_chosen, r_rejected), each (B,): `scorer` (a scoring.SequenceScorer, maybe DDP-wrapped) on the batch."""
    r = scorer(**{k: v for k, v in batch.items() if k != "margin"})  # (2B,): chosen, rejected of pair 0, ...
    return r[0::2], r[1::2]


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rank correlation (ties get their average rank); None when either side is constant."""
    import numpy as np

    def ranks(v: list[float]) -> Any:
        a = np.asarray(v, dtype=np.float64)
        order = np.argsort(a, kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        for val in np.unique(a):  # average the ranks of ties
            tie = a == val
            r[tie] = r[tie].mean()
        return r

    if len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def bias_metrics(rc: list[float], rr: list[float], pairs: list[EncodedPair]) -> dict[str, Any]:
    """What the loss does not measure, on the held-out pairs: the reward's level and spread, and its length
    bias: Spearman(reward, response length) over every response, and the accuracy on the pairs whose chosen
    response is the shorter one. (Loss, accuracy and margin are the loop's eval_ metrics.)"""
    wins = [c > r for c, r in zip(rc, rr)]
    shorter = [w for w, p in zip(wins, pairs) if p.chosen_len < p.rejected_len]
    all_r = rc + rr
    mean = sum(all_r) / len(all_r)
    return {"reward_mean": mean, "reward_std": math.sqrt(sum((v - mean) ** 2 for v in all_r) / len(all_r)),
            "length_spearman": spearman(all_r, [float(p.chosen_len) for p in pairs] + [float(p.rejected_len) for p in pairs]),
            "accuracy_chosen_shorter": sum(shorter) / len(shorter) if shorter else None,
            "pairs_chosen_shorter": len(shorter)}


def _run(config: RewardConfig, inputs: dict[str, list[Path]], out: Path, *, force: bool, hooks: Any,
         par: Any) -> Manifest:
    import torch

    from gristmill.align.batches import ItemBatches
    from gristmill.align.chat import pad_id
    from gristmill.align.losses import bradley_terry, reward_centering
    from gristmill.align.layout import shared_prefix
    from gristmill.align.models import add_lora, load_reward_model, save_outputs
    from gristmill.align.scoring import SequenceScorer
    from gristmill.align.stage import check_context, finish, load_split, rank_share, run_length, run_metrics, start
    from gristmill.train import parallel
    from gristmill.train.loop import train
    from gristmill.pretrain.model import count_params
    from gristmill.pretrain.plots import plot_training, read_rows

    s = start("reward", config, inputs, out, force=force, par=par)
    if s.done:
        return s.done
    m, tok = s.manifest, s.tokenizer

    train_pairs, eval_pairs, summary = load_split(load_preferences, config, inputs, "reward")
    enc_train, skip_train = encode_pairs(tok, train_pairs, config)
    enc_eval, skip_eval = encode_pairs(tok, eval_pairs, config)
    if not enc_train:
        raise AlignError("reward: no training pair left; add data or lower --set reward.data.eval_fraction")
    pad = pad_id(tok)
    def collate(items: list[EncodedPair]) -> dict[str, Any]:
        return collate_pairs(items, pad_id=pad, packed=config.packing, max_length=config.max_length,
                             device=par.device)

    batches = ItemBatches(len(enc_train), lambda ids: collate([enc_train[i] for i in ids]),
                          seed=config.seed, batch_size=config.batch_size, grad_accum=config.grad_accum,
                          rank=par.rank, world_size=par.world_size)
    max_steps = run_length(config, batches.steps_per_epoch(), "reward")

    model = load_reward_model(s.model_dir, pad=pad, seed=config.seed)
    check_context(model, config.max_length, "reward")
    model.to(par.device)
    if config.lora.enabled:
        model = add_lora(model, config.lora, task_type="SEQ_CLS", seed=config.seed)
    counts = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    scorer = SequenceScorer(model)
    forward = parallel.wrap(scorer, par, fsdp=False, compile=False)

    def loss_fn(fwd: Any, batch: dict[str, Any]) -> tuple[Any, int, dict[str, Any]]:
        """(summed Bradley-Terry loss (+ centring), pairs, {accuracy: pairs ranked right, margin: Σ r_c - r_r})."""
        rc, rr = rewards(fwd, batch)
        loss = bradley_terry(rc, rr, batch["margin"]).sum()
        if config.center_coef:
            loss = loss + config.center_coef * reward_centering(rc, rr).sum()
        d = (rc - rr).detach().float()
        return loss, rc.shape[0], {"accuracy": (d > 0).sum(), "margin": d.sum()}

    @torch.no_grad()
    def score_eval() -> tuple[list[float], list[float]]:
        was = model.training
        model.eval()
        rc_all: list[float] = []
        rr_all: list[float] = []
        for i in range(0, len(enc_eval), config.batch_size):
            rc, rr = rewards(scorer, collate(enc_eval[i:i + config.batch_size]))
            rc_all += rc.float().tolist()
            rr_all += rr.float().tolist()
        model.train(was)
        return rc_all, rr_all

    eval_batches = rank_share([collate(enc_eval[i:i + config.batch_size])
                               for i in range(0, len(enc_eval), config.batch_size)], par)
    if par.main:
        print(f"reward: {len(enc_train):,} pairs, {len(enc_eval):,} held out; {max_steps:,} steps; {trainable:,} of "
              f"{counts['params']:,} parameters trained ({'LoRA + score head' if config.lora.enabled else 'full'})")
    result = train(config, model, forward, par, batches, loss_fn, out_dir=out, run_id=m.id, stage="reward",
                   max_steps=max_steps, eval_batches=eval_batches if enc_eval else None,
                   steps_per_epoch=batches.steps_per_epoch(), unit="pairs", hooks=hooks)
    st = result.state
    final = {**st.evals, **(bias_metrics(*score_eval(), enc_eval) if enc_eval else {})}

    def write_outputs() -> None:
        files = save_outputs(model, out, tokenizer_dir=s.model_dir)
        abandoned: list[dict[str, Any]] = []
        rows = read_rows(out / "metrics.jsonl", abandoned=abandoned)
        plot_training(rows, st.events, out / "training.png", title=f"reward {m.id}", abandoned=abandoned,
                      eval_key="eval_loss", loss_unit="nats/pair")
        m.metrics = {
            "template": s.template,
            **run_metrics(result, par),
            **summary,
            "pairs_train": len(enc_train),
            "pairs_eval": len(enc_eval),
            "skipped_no_assistant_tokens": len(skip_train) + len(skip_eval),
            "skipped_lines": [dataclasses.asdict(k) for k in (skip_train + skip_eval)[:100]],
            "truncated": sum(p.truncated for p in enc_train + enc_eval),
            "epochs": st.cursor / len(enc_train),
            **final,
            "reward_accuracy": final.get("eval_accuracy"),
            "pairs_per_s": result.units_per_s,
            "tokens_per_s": sum(len(enc_train[i].chosen) + len(enc_train[i].rejected)
                                for i in batches.served) / result.compute_s if result.compute_s else None,
            "params": counts["params"],
            "trainable_params": trainable,
            "lora": config.lora.enabled,
            "packing": config.packing,
            "shared_prefix_fraction": sum(shared_prefix([p.chosen, p.rejected]) for p in enc_train)
            / max(1, sum(len(p.chosen) + len(p.rejected) for p in enc_train)),
        }
        finish(out, m, files, _report(m, report_path(s.model_dir, out)), st.events)

    parallel.on_main(par, write_outputs)
    return read_manifest(out)


def _report(m: Manifest, base: str) -> str:
    mt = m.metrics
    lines = [
        f"# reward {m.id}", "",
        f"Reward model from `{base}` ({mt['params']:,} parameters; {mt['trainable_params']:,} trained, "
        f"{'LoRA + score head' if mt['lora'] else 'full'}) on {mt['pairs_train']:,} preference pairs; "
        f"{mt['pairs_eval']:,} held out.", "",
        "| held-out metric | value |", "| --- | --- |",
        f"| pairwise accuracy | {_pct(mt.get('eval_accuracy'))} |",
        f"| Bradley-Terry loss | {_fmt(mt.get('eval_loss'))} |",
        f"| mean margin r(chosen) - r(rejected) | {_fmt(mt.get('eval_margin'))} |",
        f"| reward mean / std | {_fmt(mt.get('reward_mean'))} / {_fmt(mt.get('reward_std'))} |",
        f"| length bias: Spearman(reward, response tokens) | {_fmt(mt.get('length_spearman'), '+.3f')} |",
        f"| accuracy where chosen is shorter ({mt.get('pairs_chosen_shorter', 0)} pairs) | "
        f"{_pct(mt.get('accuracy_chosen_shorter'))} |", "",
        f"Trained {mt['steps']:,} steps ({mt['epochs']:.2f} epochs) at {_fmt(mt['pairs_per_s'], ',.1f')} pairs/s; "
        f"final train loss {_fmt(mt['final_train_loss'])}; {mt['spikes_skipped']} spikes skipped, "
        f"{mt['rollbacks']} rollbacks; {mt['truncated']} pairs truncated; "
        f"{'packed rows' if mt.get('packing') else 'one pair per row'}; each pair's shared prompt computed once, "
        f"which saves {_pct(mt.get('shared_prefix_fraction'))} of the tokens.", "",
        "A reward that tracks length (Spearman far from 0, low accuracy where chosen is shorter) is what RL "
        "will exploit: check both before using this model for PPO.", "",
        "![loss, learning rate and gradient norm](training.png)", "",
        "`model/` loads with `AutoModelForSequenceClassification.from_pretrained` (one output, read at the last "
        "non-pad token).", "",
    ]
    return "\n".join(lines)
