"""Experiment tracking: each logged row also to TensorBoard, wandb and / or trackio, offline first.

`tracking = [...]` in a training stage's config picks any subset of BACKENDS (default none; metrics.jsonl is
always written). Everything lands in the stage folder and nothing needs the network:

- tensorboard: event files in out_dir/tensorboard/ (the config as a text summary);
- wandb: out_dir/wandb/, in offline mode unless the user has set wandb up (WANDB_MODE, WANDB_API_KEY,
  WANDB_IDENTITY_TOKEN_FILE, or a .netrc entry for the wandb host): then wandb itself decides, as it would
  for any script of theirs;
- trackio: its local SQLite store, moved to out_dir/trackio/ (a TRACKIO_SPACE_ID / TRACKIO_SERVER_URL the
  user set is theirs to honour, as trackio does).

The run is named f"{stage}-{run_id}" and carries the stage's resolved config. The three packages come with
`pip install 'gristmill[tracking]'` and are imported only when asked for. Their files are run records, not
results: timestamps and host names make them differ run to run, so the manifest lists them as
non-deterministic (see Trackers.outputs).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import netrc
import numbers
import os
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BACKENDS = ("tensorboard", "wandb", "trackio")
EXTRA = "gristmill[tracking]"


class TrackingError(ValueError):
    """A tracking setting that cannot be honoured; the one-line message names the setting and the fix."""


def check_backends(names: list[str], *, key: str) -> None:
    """Stop before the stage starts if `names` (the setting `key`, e.g. "sft.tracking") lists an unknown
    backend or one whose package is not installed."""
    for name in names:
        if name not in BACKENDS:
            raise TrackingError(f"{key}: unknown tracking backend {name!r}; known: {', '.join(BACKENDS)}")
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the package is there but one of its own dependencies is not
                raise TrackingError(f"{key} asks for {name}, which cannot be imported ({e}): "
                                    f"pip install '{EXTRA}'") from None
            raise TrackingError(f"{key} asks for {name}, which is not installed: pip install '{EXTRA}'") from None


def numeric_fields(row: dict[str, Any]) -> dict[str, float]:
    """The fields of a metrics row that a tracker can plot: finite real numbers other than bools and "step"."""
    out = {}
    for k, v in row.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, numbers.Real):
            continue
        f = float(v)
        if math.isfinite(f):  # metrics.jsonl writes NaN / inf as null; the trackers skip them
            out[k] = f
    return out


class Trackers:
    """The backends named in `names`, opened on one run; rank 0 makes one, logs every metrics row, closes it."""

    def __init__(self, names: list[str], *, out_dir: Path, stage: str, run_id: str, config: dict):
        names = list(dict.fromkeys(names))
        check_backends(names, key=f"{stage}.tracking")
        self.out_dir = Path(out_dir)
        self.names = names
        self.name = f"{stage}-{run_id}"
        self._tb: Any = None
        self._wandb: Any = None
        self._trackio: Any = None
        # each backend registers its own closing as it opens: close() runs them all (last opened first),
        # even when one fails, and a backend that fails to start closes those already open
        self._closing = contextlib.ExitStack()
        try:
            if "tensorboard" in names:
                self._open_tensorboard(config)
            if "wandb" in names:
                self._open_wandb(stage, config)
            if "trackio" in names:
                self._open_trackio(stage, config)
        except BaseException:
            self.close()
            raise

    def _open_tensorboard(self, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package, not TensorFlow

        self._tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"), flush_secs=10)
        self._closing.callback(self._tb.close)
        self._tb.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True, default=str) + "\n```")

    def _open_wandb(self, stage: str, config: dict) -> None:
        import wandb

        settings = wandb.Settings(
            silent=True,       # no banners: the stage prints its own progress
            console="off",     # leave our stdout alone (no capture into the run)
            disable_git=True,  # the manifest records the code; avoids a git-root warning per stage
            symlink=False,     # no latest-run / debug.log symlinks in the stage folder
        )
        # wandb starts a service process (wandb-core) at the first init; stop it when we are done rather
        # than at interpreter exit, unless some other run of the user's still needs it
        def stop_service() -> None:
            if wandb.run is None:
                wandb.teardown()
            _materialise_links(self.out_dir / "wandb")
        self._closing.callback(stop_service)
        self._wandb = wandb.init(
            dir=str(self.out_dir), project=os.environ.get("WANDB_PROJECT") or "gristmill", name=self.name,
            id=self.name, group=stage, job_type=stage, config=config,
            mode=None if _wandb_user_configured() else "offline",
            resume="allow",  # a resumed stage continues its run (online) or starts a new offline folder
            settings=settings)
        self._closing.callback(self._wandb.finish)
        # "step" is our x-axis, not wandb's own counter: after a rollback the loop logs steps again, which
        # wandb would drop if passed as step= (it must only grow); as a metric they are kept.
        self._wandb.define_metric("step")
        self._wandb.define_metric("*", step_metric="step")

    def _open_trackio(self, stage: str, config: dict) -> None:
        import trackio

        self._closing.callback(_move_trackio_store, _move_trackio_store(self.out_dir / "trackio"))
        with contextlib.redirect_stdout(io.StringIO()):  # its banner and dashboard hint
            run = trackio.init(project=stage, name=self.name, config=config, resume="allow",
                               embed=False, auto_log_cpu=False, auto_log_gpu=False)
        self._trackio = run

        def finish() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                if trackio.context_vars.current_run.get() is run:
                    trackio.finish()  # also forgets the run, so trackio's exit hook does not finish it again
                else:
                    run.finish()
        self._closing.callback(finish)

    def log(self, row: dict) -> None:
        """Send one metrics.jsonl row ("step" plus fields) to every backend, at that step."""
        step = int(row["step"])
        fields = numeric_fields(row)
        if not fields:
            return
        if self._tb is not None:
            for k, v in fields.items():
                self._tb.add_scalar(k, v, global_step=step)
        if self._wandb is not None:
            self._wandb.log({"step": step, **fields})
        if self._trackio is not None:
            self._trackio.log(fields, step=step)

    def close(self) -> None:
        """Flush and close every backend (and wandb's service process). Safe to call twice."""
        self._tb = self._wandb = self._trackio = None
        self._closing.close()

    def outputs(self) -> list[Path]:
        """The files the backends wrote, relative to out_dir (call after close())."""
        return tracked_files(self.out_dir, self.names)


def tracked_files(out_dir: Path, names: tuple[str, ...] | list[str] = BACKENDS) -> list[Path]:
    """The files the tracking backends wrote under out_dir, relative to it, for the manifest (non-deterministic
    outputs). Symlinks are left out: a manifest lists files."""
    out: list[Path] = []
    for name in names:
        root = Path(out_dir) / name
        if root.is_dir():
            out += [p.relative_to(out_dir) for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]
    return out


def _wandb_user_configured() -> bool:
    """True when the user has set wandb up: a mode, an API key or identity token, or a .netrc entry for the
    wandb host (what `wandb login` writes). Read without importing wandb's private auth code, and offline."""
    if any(os.environ.get(v) for v in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE")):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = os.environ.get("NETRC") or next(
        (p for p in ("~/.netrc", "~/_netrc") if Path(p).expanduser().exists()), None)  # wandb's own search
    if not path or not host:
        return False
    try:
        return netrc.netrc(Path(path).expanduser()).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _materialise_links(root: Path) -> None:
    """wandb-core links each run's logs/debug-core.log to its log under ~/.cache/wandb: copy the file in, so
    that the stage folder holds plain files only and stays whole when moved, copied or the cache is cleared."""
    for p in list(root.rglob("*")):
        if p.is_symlink():
            target = p.resolve()
            p.unlink()
            if target.is_file():
                shutil.copyfile(target, p)


_TRACKIO_PATHS = {"TRACKIO_DIR": "", "MEDIA_DIR": "media", "ARTIFACTS_DIR": "artifacts"}


def _move_trackio_store(root: Path) -> Path:
    """Point trackio's local store at `root`; returns where it was.

    trackio fixes its folder once, at import (TRACKIO_DIR, else HF_HOME/trackio), and its modules keep
    their own copies of the paths, so one process running several stages must repoint every copy.
    """
    import trackio.utils

    before = {attr: getattr(trackio.utils, attr) for attr in _TRACKIO_PATHS}
    after = {attr: root / sub if sub else root for attr, sub in _TRACKIO_PATHS.items()}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "trackio" or name.startswith("trackio.")):
            continue
        for attr, old in before.items():
            if module.__dict__.get(attr) == old:
                setattr(module, attr, after[attr])
    return before["TRACKIO_DIR"]
