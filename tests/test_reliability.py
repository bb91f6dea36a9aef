"""The fast part of the reliability suite (`make reliability` runs it all): a kill -9 inside curate resumes bit for
bit, tampered outputs are caught by verify and refused by tokenize, and the cheap bad inputs get a clear answer."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "reliability"))

import badinputs  # noqa: E402
import tampering  # noqa: E402
from kills import kill_suite  # noqa: E402


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """One kill -9 of `gristmill run` inside curate (tiny.toml up to curate), resumed: (survived, kills, failures,
    the uninterrupted reference run's folder)."""
    work = tmp_path_factory.mktemp("kills")
    return kill_suite(work, n_kills=1, chains=1, seed=13, stages=["curate"], pages=20, log=lambda s: None)


def test_a_kill_inside_curate_resumes_to_identical_outputs(curated):
    survived, kills, failures, _ = curated
    assert (survived, kills, failures) == (1, 1, [])


def test_every_flipped_curate_output_fails_verify_and_tokenize_refuses_one(curated, tmp_path):
    *_, ref = curated
    flips = tampering.flipped_outputs(ref, ["curate"])
    assert len(flips) >= 4 and all(o.caught for o in flips), [o for o in flips if not o.caught]
    refusals = tampering.flipped_then_next_stage(ref, tmp_path, ["curate"])
    assert len(refusals) == 2 and all(o.caught for o in refusals), refusals
    from gristmill.manifests import verify

    assert verify(ref / "curate") == []  # every byte restored: the cases leave no trace


def test_outputs_pointing_outside_fail_verify(curated, tmp_path):
    *_, ref = curated
    outcomes = tampering.escapes(ref, tmp_path, next_stage=False)
    assert len(outcomes) == 3 and all(o.caught for o in outcomes), outcomes


def test_the_judges_tell_a_clean_refusal_from_a_traceback():
    from common import Result

    ok = Result(1, "", "gristmill: error: /x/bad.jsonl: line 3: not JSON\n", 0.1)
    assert badinputs.clear_failure(ok, ["bad.jsonl"]) is None
    assert badinputs.clear_failure(Result(0, "", "", 0.1), ["bad.jsonl"]) == "exit 0"
    assert "traceback" in badinputs.clear_failure(Result(1, "", "Traceback (most recent call last):\nKeyError: 1\n", 0.1), [])
    assert "names none" in badinputs.clear_failure(ok, ["other.jsonl"])


@pytest.mark.parametrize("case", [c for c in badinputs.CASES if c.fast], ids=lambda c: c.kind)
def test_cheap_bad_inputs_are_handled(case, tmp_path):
    assert badinputs.run_case(case, tmp_path, None) is None, (tmp_path / "said.txt").read_text()


def test_a_model_folder_without_its_weights_is_refused_by_name(tmp_path):
    """Found by the suite: transformers' bare OSError (a traceback) for missing weights; now one line naming them."""
    import json

    from gristmill.align import AlignError
    from gristmill.align.models import check_weights

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AlignError, match="no model.safetensors"):
        check_weights(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    with pytest.raises(AlignError, match=r"model-00002-of-00002\.safetensors is missing"):
        check_weights(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"")
    check_weights(tmp_path)  # every shard there: loading is transformers' job from here
