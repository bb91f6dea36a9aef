"""run_pretrain: the stage contract around the loop (inputs, resume, model folder, plot, report, manifest)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gristmill.config import to_dict
from gristmill.manifests import (Manifest, atomic_write_text, begin_stage, output_record, read_manifest,
                                 write_manifest)
from gristmill.pretrain import PretrainError
from gristmill.pretrain.config import PretrainConfig
from gristmill.stages import spec


def run_pretrain(config: PretrainConfig, inputs: dict[str, list[Path]], out_dir: Path, *, force: bool = False,
                 hooks: Any = None) -> Manifest:
    """Train a base model on the tokenize folder `inputs["data"][0]`; write it to `out_dir`.

    Resumes from out_dir/checkpoints when they belong to this run (same config and inputs);
    `force` starts clean. Under torchrun every rank calls this; rank 0 writes the files.
    `hooks` (a `loop.Hooks`) is the tests' injection point: faults, a kill after some step.
    """
    from gristmill.train import parallel

    with parallel.session(config.device) as par:
        return _run(config, inputs, Path(out_dir), force=force, hooks=hooks, par=par)


def _run(config: PretrainConfig, inputs: dict[str, list[Path]], out: Path, *, force: bool,
         hooks: Any, par: Any) -> Manifest:
    from gristmill.manifests.card import write_model_card
    from gristmill.manifests.inputs import report_path
    from gristmill.train import parallel
    from gristmill.train.checkpoint import discard_other_runs
    from gristmill.pretrain.data import TokenWindows, TrainBatches, val_batches
    from gristmill.pretrain.evaluate import causal_lm_loss, describe, flops_per_token, perplexity
    from gristmill.train.metrics import peak_flops
    from gristmill.train.loop import train
    from gristmill.train.spikes import event_counts
    from gristmill.train.tracking import tracked_files
    from gristmill.pretrain.model import build_model, count_params, llama_config, save_hf_folder
    from gristmill.pretrain.plots import plot_training, read_rows
    from gristmill.tokenize import TokenizeError
    from gristmill.tokenize.shards import ShardSet

    # Rank 0 checks the inputs first (begin_stage may delete a stale manifest), then the others.
    def begin():
        return begin_stage("pretrain", to_dict(config), inputs, out, expect=spec("pretrain").expect, force=force,
                           device=par.device.type, world_size=par.world_size)
    start = parallel.on_main(par, begin) or begin()
    if start.done:
        return start.done
    m = start.manifest

    parallel.on_main(par, lambda: discard_other_runs(out, m.id, force=force))

    data_dirs = [Path(d) for d in inputs["data"]]
    data_dir = data_dirs[0]  # the first source: its tokenizer is the model's, its val split the val loss
    tok_manifest = read_manifest(data_dir)
    _same_tokenizer(data_dirs)
    if config.mixture and len(config.mixture) != len(data_dirs):
        raise PretrainError(f"pretrain.mixture has {len(config.mixture)} weights for {len(data_dirs)} --data "
                            f"sources; give one weight per source, in the order of --data")
    train_sets = [ShardSet.open(d, "train", verify=False) for d in data_dirs]  # begin_stage has just checked them
    train_set = train_sets[0]
    try:
        val_set: ShardSet | None = ShardSet.open(data_dir, "val", verify=False)
    except TokenizeError:
        val_set = None
    sources = [TokenWindows(t.shards, config.seq_len) for t in train_sets]
    for d, t, w in zip(data_dirs, train_sets, sources):
        if w.num_windows == 0:
            raise PretrainError(f"{d}: the train shards hold {t.num_tokens} tokens, fewer than one window "
                                f"of pretrain.seq_len + 1 = {config.seq_len + 1}; lower --set pretrain.seq_len or add data")
    windows = sources[0]
    weights = config.mixture or [w.num_windows for w in sources]
    val_windows = TokenWindows(val_set.shards, config.seq_len) if val_set else None
    global_batch = config.batch_size * config.grad_accum * par.world_size
    val = val_batches(val_windows, count=config.eval_batches * global_batch, batch_size=config.batch_size,
                      rank=par.rank, world_size=par.world_size) if val_windows else []
    if par.main and not val:
        print(f"pretrain: {data_dir} has no validation window of {config.seq_len + 1} tokens; val loss is skipped")

    import torch

    if par.device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for the few fp32 matmuls outside bf16 autocast
    lconf = llama_config(config, vocab_size=train_set.vocab_size, eos_id=train_set.eos_id, pad_id=train_set.pad_id)
    model = build_model(lconf, seed=config.seed)
    counts = count_params(model)
    forward = parallel.wrap(model, par, fsdp=config.fsdp, compile=config.compile)
    data = TrainBatches(sources, seed=config.seed, batch_size=config.batch_size, grad_accum=config.grad_accum,
                        rank=par.rank, world_size=par.world_size, weights=weights)
    if par.main and len(sources) > 1:
        for d, w, n in zip(data_dirs, sources, data.seen(config.max_steps * data.global_batch)):
            note = f", repeats: {n / w.num_windows:.2f} epochs" if n > w.num_windows else ""
            print(f"pretrain: source {d}: {w.num_windows:,} windows, {n:,} planned ({n / data.global_batch / config.max_steps:.1%} "
                  f"of the windows){note}")
    shape = config.model_shape()
    fpt = flops_per_token(params=counts["params"], num_layers=shape["num_layers"], hidden_size=shape["hidden_size"],
                          seq_len=config.seq_len)
    if par.main:
        print(f"pretrain: {describe(model)}; {counts['params']:,} parameters; {windows.num_windows:,} train windows; "
              f"{data.global_batch * config.seq_len:,} tokens per step on {par.world_size} x {par.device.type}")

    def loss_fn(fwd: Any, windows: Any) -> Any:  # (B, T+1) int64 numpy windows
        return causal_lm_loss(fwd, torch.from_numpy(windows).to(par.device, non_blocking=True))

    result = train(config, model, forward, par, data, loss_fn, out_dir=out, run_id=m.id, stage="pretrain",
                   max_steps=config.max_steps, eval_batches=val or None, unit="tokens", flops_per_unit=fpt,
                   peak_flops=peak_flops(par.device, config.peak_tflops), hooks=hooks)
    st = result.state

    # The model folder: under FSDP all ranks gather the full weights, rank 0 writes everything.
    full_sd = parallel.full_model_state(par, model) if par.fsdp else None

    def write_outputs() -> None:
        final = model
        if full_sd is not None:  # a plain (unsharded) copy to save
            final = build_model(lconf, seed=config.seed)
            final.load_state_dict(full_sd)
        files = save_hf_folder(final, out / "model", tokenizer_dir=train_set.tokenizer_dir)
        abandoned: list[dict[str, Any]] = []
        rows = read_rows(out / "metrics.jsonl", abandoned=abandoned)
        plot_training(rows, st.events, out / "training.png", title=f"pretrain {m.id}: {describe(model)}",
                      abandoned=abandoned)
        m.metrics = {
            "final_train_loss": result.final_train_loss,
            "val_loss": st.evals.get("eval_loss"),
            "val_perplexity": perplexity(st.evals.get("eval_loss")),
            "tokens_seen": st.seen,
            "steps": st.step,
            "params": counts["params"],
            "non_embedding_params": counts["non_embedding"],
            "model": shape | {"vocab_size": lconf.vocab_size, "tie_embeddings": config.tie_embeddings},
            "tokenizer_vocab_size": train_set.vocab_size,
            "seq_len": config.seq_len,
            "global_batch_windows": data.global_batch,
            "global_batch_tokens": data.global_batch * config.seq_len,
            "train_windows": windows.num_windows,
            "sources": _source_metrics([report_path(d, out) for d in data_dirs], sources, weights, data, st.cursor,
                                       st.events, config.seq_len),
            "val_tokens_evaluated": sum(b.shape[0] * (b.shape[1] - 1) for b in val) * par.world_size,
            **event_counts(st.events),
            "windows_skipped": sum(e["skipped"][1] - e["skipped"][0] for e in st.events
                                   if e["action"] == "rollback"),
            "tokens_per_s": result.units_per_s,
            "mfu": result.mfu,
            "flops_per_token": fpt,
            "resumed_from_step": result.resumed_from,
            "steps_executed": result.steps_run,
            "train_time_s": round(result.loop_time_s, 3),
            "device": par.device.type,
            "world_size": par.world_size,
            "parallel": ("fsdp" if par.fsdp else "ddp") if par.distributed else "none",
            "dtype": "bfloat16" if (config.dtype == "bfloat16" or (config.dtype == "auto" and
                                                                    par.device.type == "cuda")) else "float32",
        }
        m.events = st.events
        atomic_write_text(out / "report.md",
                          _report(m, tok_manifest, report_path(data_dir, out), describe(model), rows))
        card = write_model_card(out, m)  # model/README.md, from m's config, inputs and metrics
        m.outputs = ([output_record(out, Path("model") / f, "model", deterministic=True) for f in files]
                     + [output_record(out, card, "card", deterministic=True)]
                     + [output_record(out, "metrics.jsonl", "metrics", deterministic=True),
                        output_record(out, "timings.jsonl", "log", deterministic=False),
                        output_record(out, "training.png", "plot", deterministic=True),
                        output_record(out, "report.md", "report", deterministic=False)]  # it quotes tokens/s
                     + [output_record(out, f, "tracking", deterministic=False) for f in tracked_files(out)])
        write_manifest(out, m)

    parallel.on_main(par, write_outputs)
    return read_manifest(out)


def _source_metrics(dirs: list[str], sources: list[Any], weights: list[float], data: Any, cursor: int,
                    events: list[dict], seq_len: int) -> list[dict[str, Any]]:
    """Per source (`dirs`: its folder as report_path() prints it): its share, windows trained on (drawn up to the
    cursor, less those rollbacks skipped), epochs."""
    seen = np.asarray(data.seen(cursor))
    for e in events:
        if e["action"] == "rollback":
            a, b = e["skipped"]
            seen -= np.asarray(data.seen(b)) - np.asarray(data.seen(a))
    return [{"path": str(d), "weight": round(float(wt) / float(sum(weights)), 6), "train_windows": w.num_windows,
             "windows_seen": int(n), "tokens_seen": int(n) * seq_len, "epochs": round(int(n) / w.num_windows, 4)}
            for d, w, wt, n in zip(dirs, sources, weights, seen)]


def _same_tokenizer(data_dirs: list[Path]) -> None:
    """Every source was tokenized by the same tokenizer (the tokenize manifests' tokenizer.json sha256)."""
    first = read_manifest(data_dirs[0]).metrics.get("tokenizer", {}).get("sha256")
    for d in data_dirs[1:]:
        other = read_manifest(d).metrics.get("tokenizer", {}).get("sha256")
        if other != first:
            raise PretrainError(f"--data {d} was tokenized with another tokenizer (sha256 {other}) than {data_dirs[0]} "
                                f"({first}); tokenize it with --tokenizer {data_dirs[0]}")


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def _report(m: Manifest, tok: Manifest, data_dir: str, model_desc: str, rows: list[dict[str, Any]]) -> str:
    mt, c, o = m.metrics, m.config, m.config["optim"]
    lines = [
        f"# pretrain {m.id}", "",
        f"Base model: {model_desc}, {mt['params']:,} parameters ({mt['non_embedding_params']:,} without the "
        f"embedding). Trained on `{data_dir}` (tokenize {tok.id}: {tok.metrics.get('train_tokens', '?'):,} train tokens, "
        f"vocabulary {mt['tokenizer_vocab_size']:,}).", "",
        "| metric | value |", "| --- | --- |",
        f"| steps | {mt['steps']:,} of {c['max_steps']:,} |",
        f"| tokens seen | {mt['tokens_seen']:,} ({mt['global_batch_tokens']:,} per step) |",
        f"| final train loss (mean of last 10 steps) | {_fmt(mt['final_train_loss'])} |",
        f"| validation loss | {_fmt(mt['val_loss'])} ({mt['val_tokens_evaluated']:,} tokens) |",
        f"| validation perplexity | {_fmt(mt['val_perplexity'], '.2f')} |",
        f"| throughput | {_fmt(mt['tokens_per_s'], ',.0f')} tokens/s on {mt['world_size']} x {mt['device']} "
        f"({mt['dtype']}, {mt['parallel']}) |",
        f"| MFU | {'n/a (no GPU peak known)' if mt['mfu'] is None else format(mt['mfu'] * 100, '.1f') + ' %'} |",
        f"| LR | peak {o['lr']:g}, warmup {o['warmup_steps']} steps, cosine to {o['lr'] * o['min_lr_ratio']:g} |",
        f"| spikes skipped / rollbacks | {mt['spikes_skipped']} / {mt['rollbacks']} "
        f"({mt['windows_skipped']:,} windows skipped) |", "",
        "![loss, learning rate and gradient norm](training.png)", "",
    ]
    if len(mt.get("sources", [])) > 1:
        lines += ["## Data mixture", "", "| source | weight | train windows | windows seen | epochs |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| `{x['path']}` | {x['weight']:.3f} | {x['train_windows']:,} | {x['windows_seen']:,} | "
                  f"{x['epochs']:.2f}{' (repeated)' if x['epochs'] > 1 else ''} |" for x in mt["sources"]]
        lines += ["", "Validation loss is measured on the first source's val split.", ""]
    if m.events:
        lines += ["## Spike events", "", "| step | action | reason | detail |", "| --- | --- | --- | --- |"]
        for e in m.events:
            detail = (f"back to step {e['to_step']}, windows {e['skipped'][0]}..{e['skipped'][1]} "
                      f"skipped, LR x{e['lr_factor']:g} until step {e['lr_factor_until_step']}"
                      if e["action"] == "rollback" else "")
            lines.append(f"| {e['step']} | {e['action']} | {e['reason']} | {detail} |")
        lines.append("")
    evals = [r for r in rows if r.get("eval_loss") is not None]
    if evals:
        lines += ["## Validation", "", "| step | train loss | val loss |", "| --- | --- | --- |"]
        lines += [f"| {r['step']} | {_fmt(r.get('loss'))} | {_fmt(r['eval_loss'])} |" for r in evals]
        lines.append("")
    lines += ["The model folder `model/` loads with `AutoModelForCausalLM.from_pretrained` and "
              "`AutoTokenizer.from_pretrained`; the per-step log is `metrics.jsonl`.", ""]
    return "\n".join(lines)
