"""`make reliability`: every kill -9, bad-input and tampering case on the tiny recipe; prints the counts, exits 1 on any failure."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its siblings are plain modules

from badinputs import bad_input_suite  # noqa: E402
from common import STAGES  # noqa: E402
from kills import kill_suite  # noqa: E402
from tampering import tamper_suite  # noqa: E402

MIN_KILLS, MIN_BAD_KINDS = 20, 14  # issue 13's bar for `make reliability`


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=None, help="where the kills land (default: from the clock, printed)")
    ap.add_argument("--kills", type=int, default=21, help=f"kill -9 count (at least {MIN_KILLS} to pass)")
    ap.add_argument("--chains", type=int, default=3, help="runs the kills are spread over, each resumed to the end")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new one under $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (it is kept anyway on a failure)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    work = args.work or Path(tempfile.mkdtemp(prefix="gristmill-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print(f"reliability: seed {seed} (rerun the same kills with --seed {seed}), scratch {work}", flush=True)

    def log(line: str) -> None:
        print(line, flush=True)

    survived, kills, kill_fail, ref = kill_suite(work / "kills", n_kills=args.kills, chains=args.chains, seed=seed,
                                                 log=log)
    tamper_run = work / "tamper" / "run"  # a copy: the cases restore every byte, but the reference stays untouched
    shutil.copytree(ref, tamper_run, symlinks=True)
    caught, tampered, tamper_fail = tamper_suite(tamper_run, work / "tamper" / "work", stages=STAGES, log=log)
    handled, kinds, bad_fail = bad_input_suite(work / "bad", ref, log=log)

    failures = kill_fail + tamper_fail + bad_fail
    if kills < MIN_KILLS:
        failures.append(f"only {kills} kills (--kills): the bar is {MIN_KILLS}")
    if kinds < MIN_BAD_KINDS:
        failures.append(f"only {kinds} bad-input kinds: the bar is {MIN_BAD_KINDS}")
    print()
    print(f"kills survived bit-identically: {survived}/{kills}")
    print(f"bad-input kinds handled: {handled}/{kinds}")
    print(f"tamperings caught: {caught}/{tampered}")
    print(f"wall time: {time.monotonic() - t0:.0f} s on {os.cpu_count()} CPU(s), seed {seed}")
    if failures or survived < kills or handled < kinds or caught < tampered:
        print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        print(f"scratch kept for inspection: {work}", file=sys.stderr)
        return 1
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
