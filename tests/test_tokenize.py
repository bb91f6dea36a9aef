"""Tokenize stage: round trips, shard/index layout, val split, HF folder, corruption, resume, Megatron export."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from gristmill.config import ConfigError, build
from gristmill.errors import GristmillError
from gristmill.manifests import ManifestError, read_manifest, sha256_file
from gristmill.tokenize import TokenizeError
from gristmill.tokenize.config import TokenizeConfig
from gristmill.tokenize.run import run_tokenize, val_hash
from gristmill.tokenize.shards import ShardSet
from gristmill.tokenize.train import load_tokenizer
from helpers import fake_curate_dir, tokenized_dir

WORDS = ("the river mill grinds grain into flour while farmers carry sacks along dusty roads "
         "near 1842 old stone bridges; prices rose 3.5% in 2024").split()


def corpus(n: int, start: int = 0) -> list[str]:
    """Deterministic, varied documents: ASCII prose, digits, non-Latin text, odd whitespace, emoji."""
    rng = np.random.default_rng(start)
    extras = ["", "  leading spaces", "tabs\tand\r\nCRLF", "naïve café — Straße", "日本語のテキスト",
              "emoji 🙂👍🏽 end", "trailing newline\n", "\x00 control \x7f chars", "ﬁ ligature Ω ≈ ∑"]
    docs = []
    for i in range(start, start + n):
        words = rng.choice(WORDS, size=int(rng.integers(3, 60)))
        docs.append(f"doc {i}: " + " ".join(words) + " " + extras[i % len(extras)])
    return docs


def decode_all(tok_dir: Path, split: str) -> list[str]:
    ss = ShardSet.open(tok_dir, split)
    tok = load_tokenizer(ss.tokenizer_dir)
    out = []
    for i in range(ss.num_documents):
        doc = ss.document(i)
        assert doc[-1] == ss.eos_id and ss.eos_id not in doc[:-1]  # exactly one eos, at the end
        out.append(tok.decode(doc[:-1].tolist(), skip_special_tokens=False))
    return out


def run(curate: Path, out: Path, tokenizer: Path | None = None, **cfg) -> object:
    inputs = {"data": [curate]} | ({"tokenizer": [tokenizer]} if tokenizer else {})
    return run_tokenize(TokenizeConfig(**cfg), inputs, out)


@pytest.mark.parametrize("dtype", ["auto", "uint32"])
def test_round_trip_and_index_layout(tmp_path, dtype):
    texts = corpus(240)
    out = tokenized_dir(tmp_path / "tok", texts, vocab_size=400, val_fraction=0.1, shard_tokens=1500, dtype=dtype)
    m = read_manifest(out)
    want = np.uint16 if dtype == "auto" else np.uint32
    assert m.metrics["dtype"] == np.dtype(want).name
    # Every document comes back exactly, in input order within its split, each split from its id hash.
    ids = [f"doc-{i}" for i in range(len(texts))]
    is_val = [val_hash(i, 0) < 0.1 for i in ids]
    assert decode_all(out, "train") == [t for t, v in zip(texts, is_val) if not v]
    assert decode_all(out, "val") == [t for t, v in zip(texts, is_val) if v]
    # .idx: N + 1 uint64 offsets from 0 to the .bin's token count; shards respect the size limit.
    shard_meta = m.metrics["shards"]
    assert len([n for n in shard_meta if n.startswith("train-")]) > 1
    total = 0
    for name, meta in shard_meta.items():
        size = (out / name).stat().st_size
        off = np.fromfile(out / name.replace(".bin", ".idx"), dtype="<u8")
        assert off[0] == 0 and off[-1] * np.dtype(want).itemsize == size
        assert len(off) == meta["documents"] + 1 and off[-1] == meta["tokens"]
        assert np.all(np.diff(off) > 0)
        assert meta["tokens"] <= 1500 or meta["documents"] == 1
        raw = np.fromfile(out / name, dtype=want)
        assert np.all(raw[off[1:].astype(np.int64) - 1] == m.metrics["eos_id"])
        total += meta["tokens"]
    assert total == m.metrics["train_tokens"] + m.metrics["val_tokens"]
    ss = ShardSet.open(out, "train")
    assert ss.dtype == want and ss.num_tokens == m.metrics["train_tokens"]
    assert ss.num_documents == m.metrics["train_documents"] == len(texts) - sum(is_val)


def test_large_vocabulary_given_tokenizer_uses_uint32(tmp_path):
    # A trained BPE plus 66,000 added tokens: ids above 65,535 force uint32 under dtype="auto".
    base = tokenized_dir(tmp_path / "small", corpus(60), vocab_size=300)
    tok = load_tokenizer(base / "tokenizer")
    tok.add_tokens([f"zzword{i}" for i in range(66_000)])
    big = tmp_path / "big.json"
    tok.save(str(big))
    texts = corpus(30) + ["zzword65999 and zzword3 stay single tokens"]
    out = tmp_path / "tok"
    m = run(fake_curate_dir(tmp_path / "cur", [{"text": t} for t in texts]), out, tokenizer=big)
    assert m.metrics["dtype"] == "uint32" and m.metrics["vocab_size"] > 65_536
    assert m.metrics["tokenizer"]["source"] == "given"
    got = decode_all(out, "train") + decode_all(out, "val")
    assert sorted(got) == sorted(texts)
    ss = ShardSet.open(out, "train") if m.metrics["train_documents"] else None
    assert ss is not None and max(int(s.max()) for s in ss.shards) > 65_535


def test_val_split_stable_when_documents_are_added(tmp_path):
    a = [{"id": f"page-{i}", "text": t} for i, t in enumerate(corpus(150))]
    b = a + [{"id": f"page-new-{i}", "text": t} for i, t in enumerate(corpus(100, start=500))]
    m1 = run(fake_curate_dir(tmp_path / "a", a), tmp_path / "ta", val_fraction=0.1)
    m2 = run(fake_curate_dir(tmp_path / "b", b), tmp_path / "tb", tokenizer=tmp_path / "ta", val_fraction=0.1)
    assert m2.metrics["tokenizer"]["sha256"] == m1.metrics["tokenizer"]["sha256"]
    val_a, val_b = set(decode_all(tmp_path / "ta", "val")), set(decode_all(tmp_path / "tb", "val"))
    old = {d["text"] for d in a}
    assert val_a and val_b & old == val_a  # old documents keep their split
    assert val_b - old  # and some new ones join val


def test_at_least_one_val_document(tmp_path):
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(corpus(20))]
    m = run(fake_curate_dir(tmp_path / "c", docs), tmp_path / "t", val_fraction=0.0)
    smallest = min(docs, key=lambda d: val_hash(d["id"], 0))
    assert m.metrics["val_documents"] == 1 and m.metrics["val_forced"]
    assert decode_all(tmp_path / "t", "val") == [smallest["text"]]
    assert smallest["text"] not in decode_all(tmp_path / "t", "train")
    assert any(e["kind"] == "val_forced" for e in m.events)


def test_autotokenizer_folder_and_chatml(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    out = tokenized_dir(tmp_path / "tok", corpus(80), vocab_size=512, split_digits=True)
    hf = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert (hf.eos_token, hf.pad_token) == ("<|endoftext|>", "<|pad|>")
    m = read_manifest(out)
    assert (hf.eos_token_id, hf.pad_token_id) == (m.metrics["eos_id"], m.metrics["pad_id"])
    msgs = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    text = hf.apply_chat_template(msgs, tokenize=False)
    assert text == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    prompt = hf.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    # Chat markers are single special tokens; the assistant mask covers "4<|im_end|>" only.
    enc = hf.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert ids.count(hf.convert_tokens_to_ids("<|im_start|>")) == 2
    assert hf.decode([i for i, k in zip(ids, mask) if k]) == "4<|im_end|>"
    for s in corpus(9) + ["  two leading", "x  \n\n y", "12345"]:
        assert hf.decode(hf(s)["input_ids"]) == s
    # split_digits: a number becomes one token per digit.
    assert [hf.decode([t]) for t in hf("98765")["input_ids"]] == list("98765")
    files = {o.path for o in m.outputs_of("tokenizer")}
    assert files == {"tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
                     "tokenizer/special_tokens_map.json"}


def test_flipped_byte_fails_verify_and_reader(tmp_path):
    from gristmill.cli import main

    out = tokenized_dir(tmp_path / "tok", corpus(60), vocab_size=300)
    assert main(["manifest", "verify", str(out)]) == 0
    shard = out / "train-00000.bin"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    assert main(["manifest", "verify", str(out)]) == 1
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        ShardSet.open(out, "train")
    # Without hashing, a shard whose size no longer matches its index is still refused.
    shard.write_bytes(bytes(data[:-2]))
    with pytest.raises(TokenizeError, match="offsets do not match"):
        ShardSet.open(out, "train", verify=False)


def test_empty_curate_output_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizeError, match="no documents"):
        run(fake_curate_dir(tmp_path / "c", []), tmp_path / "t")


def test_single_document_cannot_be_split(tmp_path):
    with pytest.raises(TokenizeError, match="at least 2"):
        run(fake_curate_dir(tmp_path / "c", [{"text": "only one"}]), tmp_path / "t")


def test_refuses_curate_folder_that_does_not_verify(tmp_path):
    cur = fake_curate_dir(tmp_path / "c", [{"text": t} for t in corpus(10)])
    (cur / "documents-00000.jsonl.gz").write_bytes(b"changed")
    with pytest.raises(ManifestError, match="does not verify"):
        run(cur, tmp_path / "t")


def test_rerun_is_skipped_and_force_redoes(tmp_path):
    cur = fake_curate_dir(tmp_path / "c", [{"text": t} for t in corpus(40)])
    m1 = run(cur, tmp_path / "t", vocab_size=300)
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "t").iterdir() if p.is_file()}
    m2 = run(cur, tmp_path / "t", vocab_size=300)
    assert m2.to_dict() == m1.to_dict()
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "t").iterdir() if p.is_file()} == stamp
    m3 = run_tokenize(TokenizeConfig(vocab_size=300), {"data": [cur]}, tmp_path / "t", force=True)
    assert m3.id == m1.id and m3.created >= m1.created
    assert [(o.path, o.sha256) for o in m3.outputs] == [(o.path, o.sha256) for o in m1.outputs]
    (tmp_path / "t" / "train-notes.txt").write_text("the user's own file")
    m4 = run(cur, tmp_path / "t", vocab_size=320)  # another config: another id, outputs rebuilt
    assert m4.id != m1.id and m4.metrics["vocab_size"] == 320
    assert (tmp_path / "t" / "train-notes.txt").is_file()  # a clean start removes only what tokenize wrote


@pytest.mark.parametrize("crash_after", ["commit", "add", "force"])
def test_resume_after_crash_gives_identical_shards(tmp_path, monkeypatch, crash_after):
    import gristmill.tokenize.run as run_mod
    from gristmill.tokenize import shards as shards_mod

    cur = fake_curate_dir(tmp_path / "c", [{"text": t} for t in corpus(300)], shard_docs=60)
    cfg = dict(vocab_size=300, shard_tokens=700, batch_size=16, val_fraction=0.05)
    clean = run(cur, tmp_path / "clean", **cfg)

    calls = {"n": 0}
    target = run_mod if crash_after == "commit" else shards_mod.ShardWriter
    name = "_save_state" if crash_after == "commit" else "add"  # "force": crash in add, then rerun with --force
    real = getattr(target, name)

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == (4 if crash_after == "commit" else 25):  # mid-run: after some shards closed
            raise KeyboardInterrupt("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(target, name, crashing)
    with pytest.raises(KeyboardInterrupt):
        run(cur, tmp_path / "t", **cfg)
    monkeypatch.setattr(target, name, real)
    assert not (tmp_path / "t" / "manifest.json").exists()
    m = run_tokenize(TokenizeConfig(**cfg), {"data": [cur]}, tmp_path / "t", force=crash_after == "force")
    assert any(e["kind"] == "resume" for e in m.events) == (crash_after != "force")
    assert [(o.path, o.sha256) for o in m.outputs if o.kind != "report"] == \
        [(o.path, o.sha256) for o in clean.outputs if o.kind != "report"]
    assert not list((tmp_path / "t").glob(".*partial"))


def test_train_fraction_samples_the_tokenizer_corpus(tmp_path):
    cur = fake_curate_dir(tmp_path / "c", [{"text": t} for t in corpus(200)])
    m = run(cur, tmp_path / "t", vocab_size=300, train_fraction=0.25, val_fraction=0.0)
    used = m.metrics["tokenizer"]["train_documents"]
    assert 20 < used < 90  # about a quarter of the 199 train documents


@pytest.mark.parametrize("dtype", ["auto", "uint32"])
def test_megatron_export_reads_back(tmp_path, dtype):
    from gristmill.tokenize.export import main

    out = tokenized_dir(tmp_path / "tok", corpus(120), vocab_size=300, shard_tokens=800, val_fraction=0.1,
                        dtype=dtype)
    want = np.uint16 if dtype == "auto" else np.int32  # Megatron has no uint32; its own builder uses int32
    assert main(["--format", "megatron", str(out), str(tmp_path / "mg")]) == 0
    for split in ("train", "val"):
        ss = ShardSet.open(out, split)
        seqs = read_mmidx(tmp_path / "mg" / f"{split}.idx", tmp_path / "mg" / f"{split}.bin")
        assert len(seqs) == ss.num_documents
        for i, s in enumerate(seqs):
            assert s.dtype == want and np.array_equal(s, ss.document(i))
    assert (tmp_path / "mg" / "tokenizer" / "tokenizer.json").is_file()


def read_mmidx(idx: Path, bin_path: Path) -> list[np.ndarray]:
    """An independent reader of Megatron-LM's MMIDIDX index, from its documented layout."""
    raw = idx.read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, = struct.unpack_from("<Q", raw, 9)
    code, = struct.unpack_from("<B", raw, 17)
    n_seq, n_doc = struct.unpack_from("<QQ", raw, 18)
    assert version == 1 and n_doc == n_seq + 1
    dtype = {8: np.uint16, 4: np.int32}[code]
    pos = 34
    sizes = np.frombuffer(raw, np.int32, n_seq, pos)
    pos += 4 * n_seq
    pointers = np.frombuffer(raw, np.int64, n_seq, pos)
    pos += 8 * n_seq
    doc_idx = np.frombuffer(raw, np.int64, n_doc, pos)
    assert pos + 8 * n_doc == len(raw)
    assert np.array_equal(doc_idx, np.arange(n_seq + 1))
    itemsize = np.dtype(dtype).itemsize
    assert pointers[0] == 0 and np.array_equal(np.diff(pointers), sizes[:-1].astype(np.int64) * itemsize)
    data = bin_path.read_bytes()
    assert len(data) == int(pointers[-1]) + int(sizes[-1]) * itemsize
    return [np.frombuffer(data, dtype, int(n), int(p)) for n, p in zip(sizes, pointers)]


def test_config_checks_name_the_field():
    with pytest.raises(ValueError, match=r"tokenize\.vocab_size=100 .*--set tokenize\.vocab_size"):
        TokenizeConfig(vocab_size=100)
    with pytest.raises(ConfigError, match="unknown key"):
        build(TokenizeConfig, {"vocab": 512}, section="tokenize")
    with pytest.raises(ConfigError, match="val_fraction"):
        build(TokenizeConfig, {"val_fraction": 1.5}, section="tokenize")
    assert build(TokenizeConfig, {"dtype": "uint32"}, section="tokenize").dtype == "uint32"


def test_given_tokenizer_folder_without_eos_is_refused(tmp_path):
    base = tokenized_dir(tmp_path / "small", corpus(40), vocab_size=300)
    tok = load_tokenizer(base / "tokenizer")
    (tmp_path / "plain").mkdir()
    tok.save(str(tmp_path / "plain" / "tokenizer.json"))
    cur = fake_curate_dir(tmp_path / "c", [{"text": t} for t in corpus(10)])
    with pytest.raises(GristmillError, match="eos token '</s>' is not in its vocabulary"):
        run(cur, tmp_path / "t", tokenizer=tmp_path / "plain", eos_token="</s>")
    m = run(cur, tmp_path / "t2", tokenizer=tmp_path / "plain")  # <|endoftext|> found in the vocabulary
    assert m.metrics["eos_token"] == "<|endoftext|>"
    assert sha256_file(tmp_path / "t2" / "tokenizer" / "tokenizer.json") == \
        sha256_file(tmp_path / "plain" / "tokenizer.json")  # copied byte for byte
    cfg = json.loads((tmp_path / "t2" / "tokenizer" / "tokenizer_config.json").read_text())
    assert (cfg["eos_token"], cfg["pad_token"]) == ("<|endoftext|>", "<|pad|>")
    # An HF folder is copied file for file; tokenize.eos_token rewrites its eos to match the shards.
    m3 = run(cur, tmp_path / "t3", tokenizer=base / "tokenizer", eos_token="<|im_end|>")
    assert m3.metrics["eos_id"] == tok.token_to_id("<|im_end|>")
    assert sha256_file(tmp_path / "t3" / "tokenizer" / "tokenizer.json") == \
        sha256_file(base / "tokenizer" / "tokenizer.json")
    cfg = json.loads((tmp_path / "t3" / "tokenizer" / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<|im_end|>"
