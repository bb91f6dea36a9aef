"""run_tokenize: curate documents -> tokenizer folder + train/val token shards + manifest (resumable)."""
from __future__ import annotations

import gzip
import hashlib
import functools
import json
import os
import re
import shutil
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from gristmill.config import to_dict
from gristmill.manifests import (MANIFEST_NAME, Manifest, atomic_write_json, atomic_write_text, begin_stage,
                                 output_record, read_manifest, sha256_file, write_manifest)
from gristmill.stages import spec
from gristmill.tokenize import TokenizeError
from gristmill.tokenize.config import TokenizeConfig
from gristmill.tokenize.shards import SPLITS, ShardWriter, read_offsets, shard_files, shard_name, token_dtype
from gristmill.tokenize.train import EOS, PAD, CHATML_TEMPLATE, import_tokenizer, load_tokenizer, save_folder, \
    train_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

STATE = ".tokenize-state.json"  # resume state; hidden so it never looks like an output
TASKS_DIR = ".tokenize-tasks"  # encoding tasks' folders (task-NNNNN/) and datatrove's logs, removed at the end
TASK_DONE = "done.json"  # a finished task's marker in its folder: its shard counts and stats
TOKENIZER_DIR = "tokenizer"


def run_tokenize(config: TokenizeConfig, inputs: dict[str, list[Path]], out_dir: Path, *,
                 force: bool = False) -> Manifest:
    """Train (or take) the tokenizer, encode every curated document into train/val shards, write the manifest.

    inputs: "data" = [a finished curate folder]; optional "tokenizer" = [an HF tokenizer folder, a
    tokenizer.json, or a finished tokenize folder] used instead of training one. Each document is
    stored as its tokens + eos (no BOS). An unfinished run with the same id resumes after the last
    input shard it finished; `force` starts over. With tokenize.workers > 1, tasks > 1 or executor = "ray" the
    encoding runs as tasks (`_encode_tasks`): the same documents and counts, resumable per task.
    """
    start = begin_stage("tokenize", to_dict(config), inputs, out_dir, expect=spec("tokenize").expect, force=force)
    if start.done:
        return start.done
    t0 = time.perf_counter()
    out, m = start.out_dir.resolve(), start.manifest
    curate_dir = Path(inputs["data"][0])
    doc_files, n_docs = _document_files(curate_dir)
    forced_val = _forced_val_id(doc_files, config)

    state = None if force else _load_state(out, m.id)
    if state is None:
        _clean(out)
        state = {"id": m.id, "inputs_done": 0, "writers": {}, "stats": {"text_bytes": 0, "documents": 0}}
    elif state["inputs_done"]:
        m.events.append({"kind": "resume",
                         "detail": f"resumed after {state['inputs_done']} of {len(doc_files)} input shards"})
    with _parallelism():
        tok, tok_info = _tokenizer(config, inputs, out, doc_files, forced_val, state)
        vocab_size = id_space(tok)
        dtype = token_dtype(vocab_size, config.dtype)
        eos_id = tok.token_to_id(tok_info["eos_token"])
        if config.executor == "local" and config.workers == 1 and config.tasks <= 1:
            _encode(tok, eos_id, dtype, config, doc_files, forced_val, out, state, total=n_docs)
        else:
            state["stats"] = _encode_tasks(config, m, doc_files, forced_val, eos_id, dtype, out)
    if state["stats"]["documents"] == 0:
        raise TokenizeError(f"{curate_dir}: the curate output has no documents; loosen the curate filters or give "
                            "it more input")

    m.outputs, shards = _outputs(out)
    count = {f"{split}_{what}": sum(v[what] for k, v in shards.items() if k.startswith(f"{split}-"))
             for split in SPLITS for what in ("tokens", "documents")}
    if count["train_documents"] == 0:
        raise TokenizeError(f"{curate_dir}: only {count['val_documents']} document(s), all in the validation split; "
                            "tokenize needs at least 2 documents")
    stats = state["stats"]
    text_tokens = count["train_tokens"] + count["val_tokens"] - stats["documents"]  # eos not counted
    seconds = time.perf_counter() - t0
    m.metrics = {
        "vocab_size": vocab_size, "dtype": dtype.name, "eos_id": eos_id, "eos_token": tok_info["eos_token"],
        "pad_id": tok.token_to_id(PAD), **count,
        "text_bytes": stats["text_bytes"],
        "bytes_per_token": round(stats["text_bytes"] / text_tokens, 4) if text_tokens else None,
        "shards": shards,
        "tokenizer": {**tok_info, "path": TOKENIZER_DIR, "sha256": sha256_file(out / TOKENIZER_DIR / "tokenizer.json")},
        "val_forced": forced_val is not None,
        "seconds": round(seconds, 3),
        "tokens_per_second": round((text_tokens + stats["documents"]) / seconds, 1),
    }
    if forced_val is not None:
        m.events.append({"kind": "val_forced", "detail": f"no document id hashed below val_fraction="
                                                         f"{config.val_fraction}; {forced_val!r} (smallest hash) "
                                                         "went to val"})
    atomic_write_text(out / "report.md", _report(m))
    m.outputs.append(output_record(out, "report.md", "report"))
    write_manifest(out, m)
    (out / STATE).unlink(missing_ok=True)
    shutil.rmtree(out / TASKS_DIR, ignore_errors=True)  # task markers and datatrove logs: the manifest has it all
    return m


def _outputs(out: Path) -> tuple[list, dict[str, dict[str, int]]]:
    """Output records (tokenizer files, then shards and indexes by split) and {shard: {tokens, documents}}."""
    outputs = [output_record(out, p.relative_to(out), "tokenizer")
               for p in sorted((out / TOKENIZER_DIR).iterdir()) if p.is_file()]
    shards = {}
    for split in SPLITS:
        for bin_p, idx_p in shard_files(out, split):
            off = read_offsets(idx_p)
            shards[bin_p.name] = {"tokens": int(off[-1]), "documents": len(off) - 1}
            outputs += [output_record(out, bin_p.name, "tokens", records=len(off) - 1),
                        output_record(out, idx_p.name, "index", records=len(off) - 1)]
    return outputs, shards


# -- inputs ------------------------------------------------------------------------------------


def _document_files(curate_dir: Path) -> tuple[list[Path], int]:
    """The curate manifest's document shards (kind "documents", in its order) and their document count."""
    cm = read_manifest(curate_dir)
    outs = cm.outputs_of("documents")
    if not outs or all(o.records == 0 for o in outs):
        raise TokenizeError(f"{curate_dir}: the curate output has no documents ({len(outs)} document shards, "
                            f"{sum(o.records or 0 for o in outs)} documents kept); loosen the curate filters or "
                            "give it more input")
    n = sum(o.records or 0 for o in outs)
    if n == 1:
        raise TokenizeError(f"{curate_dir}: the curate output has 1 document; tokenize needs at least 2 (one for "
                            "the train and one for the validation split)")
    return [curate_dir / o.path for o in outs], n


def iter_documents(path: Path) -> Iterator[tuple[str, str]]:
    """(id, text) of every document in a curate `documents-*.jsonl.gz` shard, streamed."""
    import orjson

    try:
        with gzip.open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise TokenizeError(f"{path}: line {lineno}: not valid JSON ({e})") from None
                text = rec.get("text") if isinstance(rec, dict) else None
                doc_id = rec.get("id") if isinstance(rec, dict) else None
                if not isinstance(text, str) or not isinstance(doc_id, (str, int)):
                    raise TokenizeError(f"{path}: line {lineno}: expected {{\"id\": str, \"text\": str, ...}}, got "
                                        f"keys {sorted(rec) if isinstance(rec, dict) else type(rec).__name__}")
                yield str(doc_id), text
    except (OSError, EOFError, zlib.error) as e:
        raise TokenizeError(f"{path}: cannot read the gzip stream ({e}); rerun curate for this folder") from None


def _unit(key: str) -> float:
    """A stable hash of `key` mapped to [0, 1)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") / 2.0**64


def val_hash(doc_id: str, seed: int) -> float:
    """Documents with val_hash < val_fraction form the validation split (stable as the corpus grows)."""
    return _unit(f"{seed}\0val\0{doc_id}")


def _sample_hash(doc_id: str, seed: int) -> float:
    return _unit(f"{seed}\0tokenizer\0{doc_id}")


def _forced_val_id(doc_files: list[Path], config: TokenizeConfig) -> str | None:
    """None when some document hashes into val; else the id with the smallest hash (it goes to val).

    Stops at the first val document, so on a real corpus this reads a few hundred documents.
    """
    best, best_id = 2.0, None
    for p in doc_files:
        for doc_id, _ in iter_documents(p):
            h = val_hash(doc_id, config.split_seed)
            if h < config.val_fraction:
                return None
            if h < best:
                best, best_id = h, doc_id
    return best_id


def _is_val(doc_id: str, config: TokenizeConfig, forced_val: str | None) -> bool:
    return doc_id == forced_val or val_hash(doc_id, config.split_seed) < config.val_fraction


# -- tokenizer ---------------------------------------------------------------------------------


def _tokenizer(config: TokenizeConfig, inputs: dict[str, list[Path]], out: Path, doc_files: list[Path],
               forced_val: str | None, state: dict) -> tuple["Tokenizer", dict]:
    """Train or import the tokenizer into out/tokenizer unless the resume state already has it."""
    folder = out / TOKENIZER_DIR
    info = state.get("tokenizer")
    if info and (folder / "tokenizer.json").is_file() and sha256_file(folder / "tokenizer.json") == info["sha256"]:
        return load_tokenizer(folder), {k: v for k, v in info.items() if k != "sha256"}
    given = inputs.get("tokenizer")
    if given:
        tok, eos = import_tokenizer(Path(given[0]), folder, config.eos_token)
        info = {"source": "given", "eos_token": eos}
    else:
        eos = config.eos_token or EOS
        used = {"documents": 0, "chars": 0}

        def sample() -> Iterator[str]:
            for p in doc_files:
                for doc_id, text in iter_documents(p):
                    if used["chars"] >= config.train_max_chars:
                        return
                    if _is_val(doc_id, config, forced_val) or _sample_hash(doc_id, config.split_seed) >= config.train_fraction:
                        continue
                    used["documents"] += 1
                    used["chars"] += len(text)
                    yield text

        tok = train_tokenizer(sample(), vocab_size=config.vocab_size, min_frequency=config.min_frequency,
                              split_digits=config.split_digits, eos_token=eos)
        save_folder(folder, tok, eos_token=eos, pad_token=PAD, chat_template=CHATML_TEMPLATE)
        info = {"source": "trained", "eos_token": eos, "train_documents": used["documents"],
                "train_chars": used["chars"]}
    state["tokenizer"] = {**info, "sha256": sha256_file(folder / "tokenizer.json")}
    _save_state(out, state)
    return tok, info  # the object that was saved (or copied byte for byte): no second parse


def id_space(tok: "Tokenizer") -> int:
    """Ids a model must embed: the largest id + 1. Added tokens can sit above the model's vocabulary,
    so the count of tokens is not enough."""
    added = tok.get_added_tokens_decoder()  # {id: AddedToken}; small, unlike get_vocab() at 50k+
    return max(tok.get_vocab_size(with_added_tokens=False), max(added, default=-1) + 1)


# -- encoding ----------------------------------------------------------------------------------


def _encode(tok, eos_id: int, dtype: np.dtype, config: TokenizeConfig, doc_files: list[Path],
            forced_val: str | None, out: Path, state: dict, total: int, progress: bool = True) -> None:
    """Encode every input shard not yet done into the split writers; commit the state after each.

    encode_batch_fast (no offsets: we only need ids) runs in a worker thread and releases the GIL
    while Rayon encodes on all cores, so reading the next batch and writing the previous one here
    overlap with it: writing costs little beyond the encode itself.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    writers = {s: ShardWriter(out, s, dtype, config.shard_tokens, state["writers"].get(s)) for s in SPLITS}
    stats = state["stats"]
    bar = tqdm(total=total or None, initial=stats["documents"], unit="doc", desc="tokenize",
               disable=None if progress else True)

    eos = np.array([eos_id], dtype=dtype)

    def write(splits: list[str], texts: list[str], fut) -> None:
        # One small array per document, then one concatenate: cheaper per token than growing a list.
        parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        lens: dict[str, list[int]] = {"train": [], "val": []}
        for split, e in zip(splits, fut.result()):
            ids = np.array(e.ids, dtype=dtype)  # (T,) for this document
            parts[split] += (ids, eos)
            lens[split].append(len(ids) + 1)
        for split in SPLITS:
            if lens[split]:
                writers[split].add(np.concatenate(parts[split]), np.array(lens[split], np.int64))
        stats["text_bytes"] += sum(len(t.encode("utf-8")) for t in texts)
        stats["documents"] += len(texts)
        bar.update(len(texts))

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="gristmill-encode") as pool:
            for k in range(state["inputs_done"], len(doc_files)):
                pending = None
                for batch in _batches(iter_documents(doc_files[k]), config.batch_size):
                    texts = [text for _, text in batch]
                    fut = pool.submit(tok.encode_batch_fast, texts, add_special_tokens=False)
                    splits = ["val" if _is_val(doc_id, config, forced_val) else "train" for doc_id, _ in batch]
                    if pending:
                        write(*pending)  # batch i-1 while batch i encodes
                    pending = (splits, texts, fut)
                if pending:
                    write(*pending)
                state["writers"] = {s: w.sync() for s, w in writers.items()}
                state["inputs_done"] = k + 1
                _save_state(out, state)
        for w in writers.values():
            w.finish()
    finally:
        for w in writers.values():
            w.release()
        bar.close()


def _batches(it: Iterator, n: int) -> Iterator[list]:
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


# -- encoding as tasks (tokenize.workers / tasks / executor) ----------------------------------------


def task_files(doc_files: list[Path], n: int) -> list[list[Path]]:
    """`n` contiguous, non-empty runs of the input shards (n <= len(doc_files)): task t's documents all come
    before task t+1's, so the tasks' shards laid end to end hold the documents in input order."""
    k = len(doc_files)
    return [doc_files[t * k // n:(t + 1) * k // n] for t in range(n)]


def _task_dir(out: Path, rank: int) -> Path:
    return out / TASKS_DIR / f"task-{rank:05d}"


def encode_task(job: dict, data=None, rank: int = 0, world_size: int = 1) -> None:
    """One encoding task (a datatrove pipeline callable): task `rank`'s input shards into its own train/val
    shards under .tokenize-tasks/task-NNNNN/, then its marker. A finished task (marker there) returns at once;
    an unfinished one resumes after its last finished input shard, as the one-process path does."""
    out = Path(job["out"])
    folder = _task_dir(out, rank)
    if (folder / TASK_DONE).is_file():
        return
    if job["threads"] and os.getpid() != job["parent_pid"]:  # a pool / Ray process: cores shared with the others
        os.environ.setdefault("RAYON_NUM_THREADS", str(job["threads"]))
    folder.mkdir(parents=True, exist_ok=True)
    state = _load_state(folder, job["id"])
    if state is None:
        _clean(folder)
        state = {"id": job["id"], "inputs_done": 0, "writers": {}, "stats": {"text_bytes": 0, "documents": 0}}
    tok = load_tokenizer(out / TOKENIZER_DIR)
    with _parallelism():
        _encode(tok, job["eos_id"], np.dtype(job["dtype"]), job["config"], [Path(p) for p in job["files"][rank]],
                job["forced_val"], folder, state, total=0, progress=False)
    shards = {split: len(shard_files(folder, split)) for split in SPLITS}
    atomic_write_json(folder / TASK_DONE, {"id": job["id"], "shards": shards, "stats": state["stats"]})
    (folder / STATE).unlink(missing_ok=True)


def _encode_tasks(config: TokenizeConfig, m: Manifest, doc_files: list[Path], forced_val: str | None, eos_id: int,
                  dtype: np.dtype, out: Path) -> dict:
    """Encode as tasks on datatrove's local or Ray executor, then merge; returns the summed stats.

    Tasks that left their marker (an earlier, interrupted run of this id) are skipped; the merge renames the
    tasks' shards in task order to train-NNNNN / val-NNNNN here, so the documents, in order, and every count
    are those of the one-process run (only the shard boundaries differ).
    """
    n = config.tasks or (config.workers if config.executor == "local" else len(doc_files))
    n = max(1, min(n, len(doc_files)))
    work = out / TASKS_DIR
    finished = sum(_done(out, t, m.id) is not None for t in range(n))
    if finished:
        m.events.append({"kind": "resume", "detail": f"{finished} of {n} encoding tasks already finished"})
    threads = config.cpus_per_task or (max(1, (os.cpu_count() or 1) // config.workers)
                                       if config.executor == "local" else 1)
    job = {"id": m.id, "out": str(out), "config": config,
           "files": [[str(p) for p in f] for f in task_files(doc_files, n)], "forced_val": forced_val, "eos_id": eos_id, "dtype": dtype.str, "threads": threads,
           "parent_pid": os.getpid()}
    if finished < n:
        from gristmill.curate.executors import QuietLocalExecutor, quiet_datatrove

        pipeline = [functools.partial(encode_task, job)]
        if config.executor == "local":
            ex = QuietLocalExecutor(pipeline, tasks=n, workers=max(1, min(config.workers, n)), logging_dir=str(work),
                                    skip_completed=False)
        else:
            try:
                import ray  # noqa: F401  (datatrove's Ray executor needs it; it is an extra, not a dependency)
            except ImportError:
                raise TokenizeError("tokenize.executor = \"ray\" needs Ray: pip install 'gristmill[ray]' (or "
                                    "set tokenize.executor = \"local\")") from None
            from datatrove.executor.ray import RayPipelineExecutor

            ex = RayPipelineExecutor(pipeline, tasks=n, workers=config.workers if config.workers > 1 else -1,
                                     logging_dir=str(work), cpus_per_task=threads, skip_completed=False)
        with quiet_datatrove():
            ex.run()
    markers = []
    for t in range(n):
        done = _done(out, t, m.id)
        if done is None:
            raise TokenizeError(f"{_task_dir(out, t)}: encoding task {t} of {n} did not finish (its log: "
                                f"{work}/logs/task_{t:05d}.log); run the same command again to resume it")
        markers.append(done)
    _merge_tasks(out, markers)
    return {k: sum(d["stats"][k] for d in markers) for k in ("text_bytes", "documents")}


def _done(out: Path, rank: int, run_id: str) -> dict | None:
    p = _task_dir(out, rank) / TASK_DONE
    try:
        done = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return done if isinstance(done, dict) and done.get("id") == run_id else None


def _merge_tasks(out: Path, markers: list[dict]) -> None:
    """Rename every task's shards (.idx, .bin) to their place in the whole: task order, then shard order.

    Idempotent, so a merge cut short is finished by the rerun: a shard already moved is found at its
    destination. Renames, not copies: the merge costs no token I/O.
    """
    for split in SPLITS:
        g = 0
        for t, done in enumerate(markers):
            for i in range(int(done["shards"][split])):
                for ext in ("idx", "bin"):
                    src = _task_dir(out, t) / f"{shard_name(split, i)}.{ext}"
                    dst = out / f"{shard_name(split, g)}.{ext}"
                    if src.is_file():
                        os.replace(src, dst)
                    elif not dst.is_file():
                        raise TokenizeError(f"{src}: missing, and {dst.name} is not there either; run again with "
                                            "--force")
                g += 1


@contextmanager
def _parallelism() -> Iterator[None]:
    """encode_batch runs on all cores (Rayon) unless the user set TOKENIZERS_PARALLELISM=false."""
    key = "TOKENIZERS_PARALLELISM"
    unset = key not in os.environ
    if unset:
        os.environ[key] = "true"
    try:
        yield
    finally:
        if unset:
            os.environ.pop(key, None)


# -- resume state ------------------------------------------------------------------------------


def _load_state(out: Path, run_id: str) -> dict | None:
    p = out / STATE
    if not p.is_file():
        return None
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) and state.get("id") == run_id else None


def _save_state(out: Path, state: dict) -> None:
    atomic_write_json(out / STATE, state)


# Files an earlier tokenize run may have left: shards, indexes, their partial and temporary files.
_OURS = re.compile(r"\.?(train|val)-\d{5,}\.(bin|idx|ends)(\.partial|\..+\.tmp)?|\.tokenizer\..+\.tmp")


def _clean(out: Path) -> None:
    """Remove what an earlier (other or forced) tokenize run left here; other files stay."""
    for p in out.iterdir():
        if not (_OURS.fullmatch(p.name) or p.name in (TOKENIZER_DIR, "report.md", STATE, MANIFEST_NAME, TASKS_DIR,
                                                      TASK_DONE)):
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _report(m: Manifest) -> str:
    x = m.metrics
    lines = [f"# tokenize {m.id}", "",
             f"- tokenizer: {x['tokenizer']['source']}, vocabulary {x['vocab_size']}, eos `{x['eos_token']}` "
             f"(id {x['eos_id']}), tokens stored as {x['dtype']}",
             f"- train: {x['train_documents']} documents, {x['train_tokens']} tokens",
             f"- val: {x['val_documents']} documents, {x['val_tokens']} tokens",
             f"- {x['text_bytes']} bytes of text, {x['bytes_per_token']} bytes per token (eos not counted)",
             "", "| shard | documents | tokens |", "|---|---:|---:|"]
    lines += [f"| {name} | {s['documents']} | {s['tokens']} |" for name, s in x["shards"].items()]
    return "\n".join(lines) + "\n"
