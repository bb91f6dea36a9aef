"""run_ppo: the RL stage — rollouts from the LoRA policy, rewards from a reward model and/or a checker, GAE / GRPO / RLOO updates on the training core, a judged before/after.

Read `_run` top to bottom: load the policy, the reward model and the value model; answer the held-out prompts
(before); then per iteration sample, score, compute old / reference log-probs and values, advantages, and
take the minibatch updates through the training core (`train.trainer.Trainer`: optimizer groups, LR schedule,
spike detector per update, verified checkpoints, metrics log), then answer the held-out prompts again (after).
Left out on purpose: one process only (generation dominates; issue 24 brings torchrun), no entropy bonus, no
score whitening or clipping (no recipe needed them), and no separate value optimizer.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from gristmill.align import AlignError, fmt as _fmt, pct as _pct, plot_panels, samples_table
from gristmill.align.config import PPOConfig
from gristmill.manifests import Manifest, read_manifest

TIME_KEYS = ("time_generate_s", "time_reward_s", "time_forward_s", "time_update_s")


def run_ppo(config: PPOConfig, inputs: dict[str, list[Path]], out_dir: Path, *, force: bool = False,
            hooks: Any = None) -> Manifest:
    """Train the SFT model `inputs["model"][0]` on the prompts `inputs["data"]` toward a higher reward from
    `inputs["reward"]` (a reward stage folder) and/or the prompts' answers. One process (CPU or one GPU).
    Resumes from out_dir/checkpoints of this same run, bit for bit; `force` starts clean."""
    from gristmill.train import parallel

    with parallel.session(config.device) as par:
        if par.distributed:
            raise AlignError("ppo runs in one process (generation dominates; DDP would not shorten it): start it "
                             "with python / gristmill, not torchrun")
        return _run(config, inputs, Path(out_dir), force=force, hooks=hooks, par=par)


def _run(config: PPOConfig, inputs: dict[str, list[Path]], out: Path, *, force: bool, hooks: Any,
         par: Any) -> Manifest:
    import torch

    from gristmill.align.chat import pad_id
    from gristmill.align.data import load_prompts
    from gristmill.align.judge import HeldOutPrompt, checked_accuracy, judge_with
    from gristmill.align.logprobs import TokenLogps
    from gristmill.align.models import add_lora, load_causal_lm, save_outputs
    from gristmill.align.rewards import checker_rewards, model_rewards
    from gristmill.align.generate import check_recomputed, generate, sample
    from gristmill.align.rl import Experience, advantages, explained_variance, minibatch_loss, minibatches, per_token
    from gristmill.align.scoring import SequenceScorer
    from gristmill.align.stage import check_context, finish, load_split, sample_rows, start
    from gristmill.pretrain.plots import read_rows
    from gristmill.train.memory import peak_memory_mb
    from gristmill.train.spikes import SpikeError, event_counts, spike_event
    from gristmill.train.trainer import Trainer

    s = start("ppo", config, inputs, out, force=force, par=par)
    if s.done:
        return s.done
    m, tok = s.manifest, s.tokenizer
    pad, dev, K = pad_id(tok), par.device, config.samples
    uses_model, uses_check = config.reward != "check", config.reward != "model"

    train_recs, eval_recs, summary = load_split(load_prompts, config, inputs, "ppo")
    if uses_check:
        missing = [r.source for r in train_recs if r.answer is None]
        if missing:
            raise AlignError(f"ppo.reward={config.reward} checks answers, but {len(missing)} of {len(train_recs)} "
                             f"training prompts have no 'answer' (first: {missing[0]}); use --set ppo.reward=model")
    if not train_recs:
        raise AlignError("ppo: no training prompt left; add prompts or lower --set ppo.data.eval_fraction")
    if uses_model and not inputs.get("reward"):
        raise AlignError(f"ppo.reward={config.reward} needs --reward RM_DIR (a finished reward stage); for prompts "
                         "with answers, --set ppo.reward=check needs none")

    policy_model = load_causal_lm(s.model_dir, pad=pad)
    check_context(policy_model, config.max_length, "ppo")
    policy_model.to(dev).eval()  # eval throughout: dropout would make the training forward disagree with sampling

    # -- the reward model (frozen), and the value model: the reward model with its own adapters and score head
    #    when it shares the policy's tokenizer (InstructGPT's initialisation; the reward is then read with
    #    those adapters off), else the SFT model with a new head
    rm = _reward_model(inputs, tok, par) if inputs.get("reward") else None  # with reward=check: the judge only
    value_model, value_from = None, None
    if config.advantage == "gae":
        from gristmill.align.models import load_reward_model

        if uses_model and rm["same_vocab"]:
            value_model, value_from = add_lora(rm["model"], config.lora, task_type="SEQ_CLS", seed=config.seed + 1), "reward"
            rm["model"] = value_model
        else:
            base = load_reward_model(s.model_dir, pad=pad, seed=config.seed + 1)
            value_model, value_from = add_lora(base, config.lora, task_type="SEQ_CLS", seed=config.seed + 1), "sft"
        value_model.to(dev).eval()

    def rm_off() -> Any:
        return value_model.disable_adapter() if value_from == "reward" else contextlib.nullcontext()

    judged = [HeldOutPrompt(r.messages, r.answer, r.task, r.check) for r in eval_recs[:config.judge_prompts]]
    shown = judged[:config.samples_shown]

    def answers(prompts: list[Any], sample_seed: int | None = None) -> list[str]:
        return generate(policy_model, tok, [p.messages for p in prompts], max_new_tokens=config.max_new_tokens,
                        max_length=config.max_length - config.max_new_tokens, device=dev,
                        sample_seed=sample_seed) if prompts else []

    answers_before = answers(judged)
    checkable = [p for p in judged if p.answer is not None]

    def sampled_accuracy() -> float | None:
        """Mean checker score of eval_samples responses per checkable held-out prompt, sampled as in training
        (temperature, top-p) from a fixed seed: the accuracy of the distribution RL optimises, which greedy
        decoding (the mode alone) can hide."""
        if not checkable or not config.eval_samples:
            return None
        r = sample(policy_model, tok, [p.messages for p in checkable], k=config.eval_samples,
                   max_new_tokens=config.max_new_tokens, max_length=config.max_length - config.max_new_tokens,
                   temperature=config.temperature, top_p=config.top_p, seed=config.seed + 99_991, device=dev,
                   batch_size=config.rollout_batch_size)
        texts = [tok.decode(x, skip_special_tokens=True).strip() for x in r.response_ids]
        right = checker_rewards([p for p in checkable for _ in range(config.eval_samples)], texts)
        return sum(right) / len(right)

    sampled_before = sampled_accuracy()
    reference_copy = None
    if config.lora.enabled:
        policy_model = add_lora(policy_model, config.lora, task_type="CAUSAL_LM", seed=config.seed)
    else:  # full fine-tuning: the reference is a frozen copy of the SFT model
        reference_copy = TokenLogps(load_causal_lm(s.model_dir, pad=pad).to(dev).eval(), temperature=config.temperature)
        for p in reference_copy.parameters():
            p.requires_grad_(False)
    policy_model.eval()
    policy = TokenLogps(policy_model, temperature=config.temperature)
    value = SequenceScorer(value_model) if value_model is not None else None
    roles = _role_memory(policy_model, reference_copy, rm, value_model, value_from)

    @torch.no_grad()
    def reference_logps(groups: list[Any], chunk: int) -> Any:
        kw = dict(chunk=chunk, pad=pad, max_length=config.max_length, device=dev)
        if reference_copy is not None:
            return per_token(reference_copy, groups, **kw)
        with policy_model.disable_adapter():
            return per_token(policy, groups, **kw)

    def rewards_for(prompts: list[Any], texts: list[str]) -> tuple[Any, dict[str, float]]:
        """(S,) scores before penalties; and the reward model's and checker's means."""
        score = torch.zeros(len(texts))
        info: dict[str, float] = {}
        if uses_model:
            with rm_off():
                got = model_rewards(rm["scorer"](), rm["tok"], [p.messages for p in prompts],
                                    [texts[i * K:(i + 1) * K] for i in range(len(prompts))],
                                    max_length=config.max_length, device=dev)
            score += torch.tensor([x for row in got for x in row])
            info["reward_model_mean"] = score.mean().item()
        if uses_check:
            right = torch.tensor(checker_rewards([p for p in prompts for _ in range(K)], texts))
            score += (config.check_weight if uses_model else 1.0) * right
            info["accuracy"] = right.mean().item()
        return score, info

    n_train, P = len(train_recs), config.prompts_per_iteration

    def prompts_for(cursor: int) -> list[Any]:
        """The prompts at data positions cursor .. cursor + P: a pure function of (seed, cursor); each pass over
        the data is a fresh permutation. The cursor moves P per iteration (more after a rollback)."""
        out_ = []
        for pos in range(cursor, cursor + P):
            perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(config.seed + pos // n_train))
            out_.append(train_recs[perm[pos % n_train].item()])
        return out_

    # -- the training core: the policy (its adapters, or every weight) and the value model are its parts
    trained = torch.nn.ModuleDict({"policy": policy_model} | ({"value": value_model} if value_model is not None else {}))
    trainer = Trainer(config, trained, trained, par, out_dir=out, run_id=m.id, stage="ppo", max_steps=config.max_steps,
                      hooks=hooks)
    trainer.state.extra = {"kl_coef": config.kl_coef}  # the adaptive controller's state, checkpointed with the loop
    resumed_from = trainer.start()
    st, log = trainer.state, trainer.log
    n_policy = sum(p.numel() for p in trainer.params["policy"])
    n_value = sum(p.numel() for p in trainer.params.get("value", []))
    print(f"ppo ({config.advantage}, reward={config.reward}): {n_train:,} prompts, {len(eval_recs):,} held out; "
          f"{config.max_steps} iterations x {P} prompts x {K} samples; {n_policy:,} policy and {n_value:,} value "
          f"parameters trained; value model: {value_from or 'none'}")

    def loss_fn(_: Any, gids: list[int]) -> Any:
        return minibatch_loss(exp, gids, config, policy=policy, value=value, kl_coef=st.extra["kl_coef"], pad=pad,
                              device=dev)

    t_loop = time.perf_counter()
    iters_run = 0
    try:
        while st.step < config.max_steps:
            n = st.step + 1  # the iteration being taken, 1-based
            it = st.cursor // P  # seeds follow the data position, so a rollback samples new prompts afresh
            lr = trainer.set_lr()
            kl_coef = st.extra["kl_coef"]
            prompts = prompts_for(st.cursor)
            t0 = time.perf_counter()
            roll = sample(policy_model, tok, [p.messages for p in prompts], k=K, max_new_tokens=config.max_new_tokens,
                          max_length=config.max_length - config.max_new_tokens, temperature=config.temperature,
                          top_p=config.top_p, seed=config.seed * 1_000_003 + it * 10_007, device=dev,
                          batch_size=config.rollout_batch_size)
            texts = [tok.decode(r, skip_special_tokens=True).strip() for r in roll.response_ids]
            t1 = time.perf_counter()
            raw, info = rewards_for(prompts, texts)
            finished = torch.tensor(roll.finished)
            scores = raw - config.unfinished_penalty * (~finished).float()
            t2 = time.perf_counter()
            groups = roll.groups(K)
            chunk = max(1, config.minibatch_size // K)
            with torch.no_grad():
                kw = dict(chunk=chunk, pad=pad, max_length=config.max_length, device=dev)
                old_logp, entropy = per_token(policy, groups, with_entropy=True, **kw)
                worst = check_recomputed(roll.logps, old_logp)
                ref_logp = reference_logps(groups, chunk)
                values = per_token(_ValueAtTokens(value), groups, **kw) if value is not None else None
            exp = Experience(groups=groups, k=K, lengths=torch.tensor([len(r) for r in roll.response_ids]),
                             scores=scores, old_logp=old_logp.cpu(), ref_logp=ref_logp.cpu(), entropy=entropy.cpu(),
                             values=values.cpu() if values is not None else None)
            advantages(exp, kind=config.advantage, kl_coef=kl_coef, kl_estimator=config.kl_estimator,
                       gamma=config.gamma, lam=config.lam)
            t3 = time.perf_counter()

            # the updates: each minibatch one step of the core, judged by the spike detector
            sums: dict[str, float] = {}
            applied, rollback = 0, None
            mbs = minibatches(exp, config, seed=config.seed * 7_919 + it * 101)
            for gids in mbs:
                u = trainer.update(n, [gids], loss_fn)
                v = u.verdict
                if v.action != "ok":
                    event = spike_event(n, v, u.loss, u.grad_norm)
                    st.events.append(event)
                    print(f"ppo: iteration {n}: spike ({v.reason}) -> {v.action}")
                if v.action == "stop":
                    raise SpikeError(f"ppo: iteration {n}: {v.reason}; already rolled back {trainer.detector.rollbacks} "
                                     f"times (ppo.spike.max_rollbacks={config.spike.max_rollbacks}). The last good "
                                     f"checkpoints are in {trainer.ckpt_dir}. Lower ppo.optim.lr or raise ppo.kl_coef")
                if v.action == "rollback":
                    rollback = event
                    break
                if v.action == "ok":
                    applied += 1
                    row_u = {"loss": u.loss, "grad_norm": u.grad_norm, **u.stats,
                             **{f"grad_norm_{k}": x for k, x in u.part_norms.items()}}
                    for key, x in row_u.items():
                        sums[key] = sums.get(key, 0.0) + x
            if rollback is not None:  # back to the newest checkpoint; this iteration's prompts (+ margin) skipped
                rollback |= trainer.rollback(skip_to=st.cursor + P * (1 + config.spike.margin_steps))
                log.write({"step": n, "action": "rollback", "reason": rollback["reason"], "event": rollback})
                continue
            t4 = time.perf_counter()

            lengths = exp.lengths.float()
            kl_mean = exp.kl.mean().item()
            row = {"step": n, "lr": lr, "kl_coef": kl_coef, "score": raw.mean().item(),
                   "score_std": raw.std(unbiased=False).item(), "reward": (scores - kl_coef * exp.kl).mean().item(),
                   "kl": kl_mean, "entropy_rollout": exp.entropy.mean().item(),
                   "response_tokens": lengths.mean().item(), "finished": finished.float().mean().item(),
                   "reward_length_corr": _corr(raw, lengths), "logp_max_diff": worst, **info,
                   **{k: x / applied for k, x in sums.items()}, "updates_skipped": len(mbs) - applied,
                   "time_generate_s": t1 - t0, "time_reward_s": t2 - t1, "time_forward_s": t3 - t2,
                   "time_update_s": t4 - t3}
            if exp.returns is not None:
                row["explained_variance"] = explained_variance(exp.values, exp.returns)
            if config.target_kl > 0:  # Ziegler et al.: proportional control of the coefficient, error clipped to ±20 %
                err = max(-0.2, min(0.2, kl_mean / config.target_kl - 1))
                st.extra["kl_coef"] = kl_coef * (1 + err * len(texts) / config.kl_horizon)
            st.step, st.cursor, st.seen = n, st.cursor + P, st.seen + len(texts)
            log.write(row)
            iters_run += 1
            print(f"ppo: iteration {n}/{config.max_steps}: score {row['score']:.3f} kl {kl_mean:.3f} "
                  f"length {row['response_tokens']:.1f}" + (f" accuracy {info['accuracy']:.2f}" if "accuracy" in info else ""))
            if n % config.checkpoint.every == 0 or n == config.max_steps:
                trainer.save()
            trainer.hooks.after_step(n)
    finally:
        trainer.close()
    loop_time = time.perf_counter() - t_loop

    # -- before / after on held-out prompts
    answers_after = answers(judged)
    verdict = {}
    if rm is not None and judged:
        with rm_off():
            verdict = judge_with(rm["scorer"](), rm["tok"], judged, answers_before, answers_after,
                                 max_length=config.max_length, device=dev)
    kl_sft = _kl_to_sft(policy_model, reference_copy.model if reference_copy is not None else None, tok, judged,
                        answers(judged, sample_seed=config.seed), config, pad, dev) if judged else None
    acc_before, n_checked = checked_accuracy(judged, answers_before)
    acc_after, _ = checked_accuracy(judged, answers_after)
    sampled_after = sampled_accuracy()
    rows = read_rows(out / "metrics.jsonl", with_timings=True)
    hacking = _length_hacking(rows, verdict, acc_before, acc_after)
    if hacking:
        print(f"ppo: WARNING: {hacking}")

    files = save_outputs(policy_model, out, tokenizer_dir=s.model_dir)
    _plot(rows, out / "rl.png", title=f"ppo ({config.advantage}, reward={config.reward}) {m.id}")
    timing = {k: sum(r.get(k, 0.0) for r in rows) for k in TIME_KEYS}
    m.metrics = {
        "template": s.template, **summary, "advantage": config.advantage, "reward": config.reward,
        "iterations": st.step, "resumed_from_iteration": resumed_from, "iterations_run": iters_run,
        "train_time_s": round(loop_time, 3), "prompts_train": n_train, "prompts_eval": len(eval_recs),
        "value_model": value_from, "reference": "copy" if reference_copy is not None else "adapter",
        "reward_tokenizer": None if rm is None else ("same" if rm["same_vocab"] else "re-encoded from text"),
        "roles_memory_mb": roles, "peak_memory_mb": round(peak_memory_mb(dev), 1), "kl_coef_final": st.extra["kl_coef"],
        **event_counts(st.events),
        "events": st.events, **{f"total_{k}": round(v, 3) for k, v in timing.items()},
        "first": _pick(rows[0] if rows else {}), "last": _pick(rows[-1] if rows else {}),
        "kl_to_sft": kl_sft, **verdict, "answers_checked": n_checked, "answer_accuracy_before": acc_before,
        "answer_accuracy": acc_after, "sampled_accuracy_before": sampled_before, "sampled_accuracy": sampled_after,
        "length_hacking_warning": hacking,
        "trainable_params": n_policy, "value_trainable_params": n_value,
        "lora": config.lora.enabled,
        "samples": [{"prompt": p.messages[-1]["content"], "before": b, "after": a}
                    for p, b, a in zip(shown, answers_before, answers_after)],
    }
    finish(out, m, files, _report(m, s.model_dir), st.events, plots=("rl.png",), training_plot=False,
           samples=sample_rows(judged, answers_before, answers_after))
    return read_manifest(out)


class _ValueAtTokens:
    """A value scorer called with collate_logps's batch: V at each `pos` (the position before a response token)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    def __call__(self, input_ids: Any, position_ids: Any, attention_mask: Any, pos: Any, target: Any) -> Any:
        return self.scorer(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, last=pos)


def _reward_model(inputs: dict[str, list[Path]], policy_tok: Any, par: Any) -> dict[str, Any]:
    """The frozen reward model of `--reward`, its tokenizer checked: the template it was trained with, and
    against the policy's — the same vocabulary under another template is refused (the model would score
    text laid out as it never saw); another vocabulary is fine (responses are re-encoded from text)."""
    from gristmill.align.chat import pad_id
    from gristmill.align.models import (check_same_template, describe_tokenizer, load_reward_model, load_tokenizer,
                                        model_dir, recorded_template)
    from gristmill.align.scoring import SequenceScorer

    src = inputs["reward"][0]
    folder = model_dir(src)
    tok = load_tokenizer(folder)
    info = describe_tokenizer(tok)
    check_same_template(info, recorded_template(src), where=str(folder), expected_from=f"{src}/manifest.json")
    same_vocab = tok.get_vocab() == policy_tok.get_vocab()
    policy_info = describe_tokenizer(policy_tok)
    if same_vocab and info["chat_template_sha256"] != policy_info["chat_template_sha256"]:
        raise AlignError(f"{folder}: the reward model's chat template differs from the policy's (sha256 "
                         f"{info['chat_template_sha256'][:12]} vs {policy_info['chat_template_sha256'][:12]}) while their "
                         "vocabularies are the same: it would score answers laid out in a template it was not trained "
                         "on. Train the reward model from this SFT model (gristmill align reward --model SFT_DIR)")
    model = load_reward_model(folder, pad=pad_id(tok), seed=0).to(par.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rm: dict[str, Any] = {"model": model, "tok": tok, "same_vocab": same_vocab}
    rm["scorer"] = lambda: SequenceScorer(rm["model"])
    return rm


def _kl_to_sft(policy_model: Any, reference_model: Any, tok: Any, judged: list[Any], samples: list[str],
               config: PPOConfig, pad: int, dev: Any) -> float | None:
    """KL(π || π_SFT) per held-out prompt, from answers sampled at temperature 1 (judge.kl_to_reference);
    the SFT model is the policy with its adapters off, or `reference_model` (full fine-tuning)."""
    import torch

    from gristmill.align.judge import kl_to_reference
    from gristmill.align.logprobs import TokenLogps, collate_logps, sequence_logps

    def logps(module: Any, adapters_off: bool) -> Any:
        def f(groups: list[list[Any]]) -> Any:
            b = collate_logps(groups, pad_id=pad, max_length=config.max_length, packed=True, device=dev)
            with policy_model.disable_adapter() if adapters_off else contextlib.nullcontext():
                return sequence_logps(module, b)[0]
        return f

    policy = TokenLogps(policy_model)  # temperature 1: the models' own distributions
    ref = logps(TokenLogps(reference_model), False) if reference_model is not None else logps(policy, True)
    with torch.no_grad():
        return kl_to_reference(logps(policy, False), ref, tok, judged, samples, max_length=config.max_length)


def _role_memory(policy: Any, reference_copy: Any, rm: dict | None, value_model: Any, value_from: str | None) -> dict:
    """MB of parameters each role holds (fp32 on CPU); a role that shares another's weights holds only its own."""
    def mb(ps: Any) -> float:
        return round(sum(p.numel() * p.element_size() for p in ps) / 2**20, 2)

    frozen = [p for p in policy.parameters() if not p.requires_grad]
    out = {"policy_base": mb(frozen), "policy_trained": mb(p for p in policy.parameters() if p.requires_grad),
           "reference": mb(reference_copy.parameters()) if reference_copy is not None else 0.0}
    if value_model is not None:
        own = [p for p in value_model.parameters() if p.requires_grad]
        out["value_trained"] = mb(own)
        out["value_base"] = 0.0 if value_from == "reward" else mb(p for p in value_model.parameters() if not p.requires_grad)
    if rm is not None:
        out["reward_model"] = mb(p for p in rm["model"].parameters() if not p.requires_grad)
    return out


def _corr(x: Any, y: Any) -> float | None:
    """Pearson correlation; None when either side is constant."""
    xs, ys = x.float() - x.float().mean(), y.float() - y.float().mean()
    den = (xs.pow(2).sum() * ys.pow(2).sum()).sqrt()
    return None if den == 0 else (xs * ys).sum().div(den).item()


def _pick(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("score", "accuracy", "reward_model_mean", "kl", "response_tokens", "entropy", "reward_length_corr")
    return {k: row.get(k) for k in keys if k in row}


def _length_hacking(rows: list[dict[str, Any]], verdict: dict[str, Any], acc_before: float | None,
                    acc_after: float | None) -> str | None:
    """A warning when the score moved with response length while nothing independent of length improved:
    across iterations the mean score and the mean length correlate (|r| > 0.5), responses changed length
    by > 20 % in that direction (longer, or shorter when r < 0), and neither the checked accuracy nor,
    for longer answers, the win rate among answers that did not get longer went up. (Within one iteration
    the correlation is logged as reward_length_corr; as responses converge it turns noisy, so the trend
    over the run is what decides.)"""
    if len(rows) < 4:
        return None
    import torch

    score = torch.tensor([r["score"] for r in rows])
    length = torch.tensor([r["response_tokens"] for r in rows])
    corr = _corr(score, length)
    if corr is None or abs(corr) <= 0.5:
        return None
    k = max(1, len(rows) // 4)  # first and last quarter of the run
    before, after = length[:k].mean().item(), length[-k:].mean().item()
    if not (after > 1.2 * before if corr > 0 else after < before / 1.2):
        return None
    better = ((acc_before is not None and acc_after is not None and acc_after > acc_before)
              or (corr > 0 and (verdict.get("win_rate_not_longer") or 0) > 0.5))
    if better:
        return None
    return (f"the score rose as responses got {'longer' if corr > 0 else 'shorter'} (correlation of score and length "
            f"across iterations {corr:+.2f}; length {before:.1f} -> {after:.1f} tokens) while the checked accuracy did "
            "not improve: likely reward hacking by length. Raise ppo.kl_coef, add the checker "
            "(ppo.reward=model+check), or retrain the reward model with length-balanced pairs")


def _plot(rows: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """score (and checker accuracy), KL, response length, entropy and value loss against iteration."""
    panels = [("score", ["score", "accuracy"]), ("KL to the reference (nats / response)", ["kl"]),
              ("response length (tokens)", ["response_tokens"]), ("entropy (nats / token)", ["entropy"]),
              ("value loss", ["value_loss"]), ("clip fraction, approx KL", ["clipfrac", "approx_kl"])]
    plot_panels(path, rows, [(name, [(k, "-o", k) for k in keys]) for name, keys in panels], title=title,
                xlabel="iteration", shape=(2, 3))


def _report(m: Manifest, base: Path) -> str:
    from gristmill.align.judge import win_rate_text

    mt, c = m.metrics, m.config
    first, last = mt["first"], mt["last"]
    value_txt = {"reward": "the reward model with its own LoRA adapters and score head (the reward is read with them off)",
                 "sft": "the SFT model with LoRA adapters and a new score head (a second copy of its weights)",
                 None: "none (the baseline comes from the other samples of each prompt)"}[mt["value_model"]]
    lines = [
        f"# ppo ({mt['advantage']}, reward={mt['reward']}) {m.id}", "",
        f"`{base}` trained for {mt['iterations']} iterations of {c['prompts_per_iteration']} prompts x {c['samples']} "
        f"samples ({c['ppo_epochs']} PPO epochs, minibatches of {c['minibatch_size']}) on {mt['prompts_train']:,} "
        f"prompts; {mt['trainable_params']:,} policy parameters trained "
        f"({'LoRA r=' + str(c['lora']['r']) if mt['lora'] else 'full fine-tuning'}). Reference: "
        f"{'the policy with its adapters off' if mt['reference'] == 'adapter' else 'a frozen copy of the SFT model'}. "
        f"Value model: {value_txt}.", "",
        "| per iteration | first | last |", "| --- | --- | --- |",
    ]
    for key, name in (("score", "score (before the KL term)"), ("accuracy", "checker accuracy (sampled)"),
                      ("reward_model_mean", "reward model score (sampled)"), ("kl", "KL to the reference (nats)"),
                      ("response_tokens", "response length (tokens)"), ("entropy", "entropy (nats / token)"),
                      ("reward_length_corr", "correlation of score with length")):
        if key in first or key in last:
            lines.append(f"| {name} | {_fmt(first.get(key))} | {_fmt(last.get(key))} |")
    lines.append("")
    if mt.get("judged_prompts"):
        lines += [
            f"## Before / after, judged by the reward model ({mt['judged_prompts']} held-out prompts, greedy)", "",
            "| | SFT | this model |", "| --- | --- | --- |",
            f"| mean reward | {_fmt(mt['reward_before'])} | {_fmt(mt['reward_after'])} |",
            f"| mean answer length (tokens) | {_fmt(mt['answer_tokens_before'], '.1f')} | "
            f"{_fmt(mt['answer_tokens_after'], '.1f')} |", "",
            win_rate_text(mt), ""]
    if mt.get("answers_checked"):
        lines += [f"Exact-answer accuracy on {mt['answers_checked']} checkable held-out prompts: greedy "
                  f"{_pct(mt['answer_accuracy_before'])} (SFT) -> **{_pct(mt['answer_accuracy'])}**"]
        if mt.get("sampled_accuracy") is not None:
            lines[-1] += (f"; sampled as in training ({c['eval_samples']} answers per prompt, temperature "
                          f"{c['temperature']}) {_pct(mt['sampled_accuracy_before'])} -> **{_pct(mt['sampled_accuracy'])}**")
        lines += ["", "RL moves the distribution it samples from; greedy decoding reads only its mode, so the sampled "
                  "accuracy is the figure RL optimises and the greedy one what a deterministic user sees.", ""]
    lines += [f"KL to the SFT model on held-out prompts (sampled answers): {_fmt(mt.get('kl_to_sft'))} nats per answer.", ""]
    if mt.get("length_hacking_warning"):
        lines += [f"**Warning**: {mt['length_hacking_warning']}.", ""]
    total = sum(mt[f"total_{k}"] for k in TIME_KEYS) or 1.0
    split = ", ".join(f"{k[5:-2]} {mt[f'total_{k}'] / total:.0%}" for k in TIME_KEYS)
    lines += [f"Time: {mt['train_time_s']:.1f} s in the loop ({split}); peak memory {mt['peak_memory_mb']} MB; "
              f"parameters held per role (MB): " + ", ".join(f"{k} {v}" for k, v in mt["roles_memory_mb"].items()) + ".",
              "", "![score, KL, length, entropy, value loss](rl.png)", ""]
    lines += samples_table(mt["samples"], "SFT", "this model")
    lines += ["`model/` is the merged policy (`AutoModelForCausalLM.from_pretrained`); `adapter/` its LoRA adapter "
              "alone; `metrics.jsonl` one row per iteration.", ""]
    return "\n".join(lines)
