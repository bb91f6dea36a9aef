"""Data mixtures: several tokenize folders in fixed proportions, a pure function of (seed, cursor), resumable exactly."""
from __future__ import annotations

import numpy as np
import pytest

from faults import Killed, kill_at
from gristmill.manifests import read_manifest
from gristmill.pretrain import PretrainError
from gristmill.pretrain.data import MIX_BLOCK, Mixture, TokenWindows, TrainBatches, window_ids
from gristmill.pretrain.run import run_pretrain
from helpers import fake_curate_dir, tokenized_dir
from pretrain_helpers import corpus, make_tokens, rows, tiny


def test_mixture_keeps_its_quotas_and_uses_every_draw_once():
    mix = Mixture([0.7, 0.2, 0.1], seed=3)
    pos = np.arange(5 * MIX_BLOCK + 123)
    src, k = mix.locate(pos)
    assert np.bincount(src[:5 * MIX_BLOCK]).tolist() == [3500, 1000, 500]
    for s in range(3):  # source s's draws are 0, 1, 2, ... in cursor order: no window drawn twice, none skipped
        assert k[src == s].tolist() == list(range(int((src == s).sum())))
    for cursor in (0, 1, 999, 1000, 2345, len(pos)):
        assert mix.draws(cursor).tolist() == np.bincount(src[:cursor], minlength=3).tolist()
    shuffled = np.random.default_rng(0).permutation(pos)  # any order of positions gives the same answers
    s2, k2 = mix.locate(shuffled)
    assert (s2 == src[shuffled]).all() and (k2 == k[shuffled]).all()


def test_one_source_is_the_single_stream_order():
    rng = np.random.default_rng(1)
    w = TokenWindows([rng.integers(0, 100, 700), rng.integers(0, 100, 300)], seq_len=16)
    data = TrainBatches(w, seed=5, batch_size=4, grad_accum=2, rank=1, world_size=2)
    for cursor in (0, 16, 48, 1000):
        got = np.concatenate(data.micro_batches(cursor))
        assert (got == w.gather(window_ids(5, cursor + 8, 8, w.num_windows))).all()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two tokenize folders with one tokenizer: a (~300 documents) and b (12 documents, so it repeats)."""
    from gristmill.tokenize.config import TokenizeConfig
    from gristmill.tokenize.run import run_tokenize

    d = tmp_path_factory.mktemp("mix")
    a = make_tokens(d / "a")
    cur = fake_curate_dir(d / "b-curate", [{"text": t} for t in corpus(12, seed=1)])
    run_tokenize(TokenizeConfig(vocab_size=512, val_fraction=0.1), {"data": [cur], "tokenizer": [a]}, d / "b")
    return a, d / "b"


CFG = dict(max_steps=16, checkpoint={"every": 5}, eval_every=4, mixture=[0.7, 0.3])


def test_mixture_run_keeps_proportions_repeats_the_small_source_and_resumes_exactly(sources, tmp_path):
    a, b = sources
    straight = run_pretrain(tiny(**CFG), {"data": [a, b]}, tmp_path / "straight")
    src = straight.metrics["sources"]
    assert [x["weight"] for x in src] == [0.7, 0.3]
    total = 16 * 8
    assert [x["windows_seen"] for x in src] == Mixture([0.7, 0.3], seed=0).draws(total).tolist()
    assert abs(src[1]["windows_seen"] / total - 0.3) < 0.05
    assert src[1]["epochs"] > 1 and src[0]["epochs"] < 1  # b ran out and repeated; the report says so
    assert "(repeated)" in (tmp_path / "straight" / "report.md").read_text()

    out = tmp_path / "stopped"
    with pytest.raises(Killed):
        run_pretrain(tiny(**CFG), {"data": [a, b]}, out, hooks=kill_at(13))
    resumed = run_pretrain(tiny(**CFG), {"data": [a, b]}, out)
    assert resumed.metrics["resumed_from_step"] == 10
    r1, r2 = rows(tmp_path / "straight"), rows(out)
    assert all(r1[s]["loss"] == r2[s]["loss"] for s in range(1, 17))
    assert (read_manifest(out).output("model/model.safetensors").sha256
            == straight.output("model/model.safetensors").sha256)
    # and the mixture is not the single source: the losses differ from training on a alone
    alone = run_pretrain(tiny(**(CFG | {"mixture": []})), {"data": [a]}, tmp_path / "alone")
    assert rows(tmp_path / "alone")[16]["loss"] != r1[16]["loss"] and alone.metrics["sources"][0]["epochs"] < 1


def test_another_tokenizer_or_a_wrong_weight_count_is_refused(sources, tmp_path):
    a, _ = sources
    other = tokenized_dir(tmp_path / "other", corpus(40, seed=2), vocab_size=300)
    with pytest.raises(PretrainError, match="another tokenizer") as e:
        run_pretrain(tiny(max_steps=6), {"data": [a, other]}, tmp_path / "o1")
    sha = lambda d: read_manifest(d).metrics["tokenizer"]["sha256"]  # noqa: E731
    assert sha(a) in str(e.value) and sha(other) in str(e.value)
    with pytest.raises(PretrainError, match="2 weights for 1"):
        run_pretrain(tiny(max_steps=6, mixture=[0.5, 0.5]), {"data": [a]}, tmp_path / "o2")
