"""What training measures and writes: metrics.jsonl and timings.jsonl, peak FLOP/s and MFU."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from gristmill.manifests import atomic_write_text

def is_timing(key: str) -> bool:
    """Wall-clock fields of a log row (tokens_per_s, time_s, time_generate_s, mfu): they differ run to run."""
    return key == "mfu" or key.endswith("_per_s") or key.startswith("time")


class MetricsLog:
    """metrics.jsonl: one JSON row per logged step, appended and flushed as training goes (rank 0 only), and
    timings.jsonl beside it: the same steps' wall-clock fields (is_timing), so that metrics.jsonl is the same
    bytes for the same config and inputs.

    On (re)start, rows after the checkpoint being resumed are dropped: they will be replayed. After
    a rollback the replayed steps appear again later in the file; readers keep the last row per step.
    """

    def __init__(self, path: Path, *, keep_through: int, enabled: bool, trackers: Any = None):
        self.files: list[Any] = []
        self.trackers = trackers  # tracking.Trackers: every row also goes to TensorBoard / wandb / trackio
        if not enabled:
            return
        for p in (path, path.with_name(TIMINGS)):
            kept = []
            if keep_through > 0 and p.is_file():
                kept = [ln for ln in p.read_text(encoding="utf-8").splitlines()
                        if ln.strip() and json.loads(ln).get("step", 0) <= keep_through]
            atomic_write_text(p, "".join(ln + "\n" for ln in kept))
            self.files.append(open(p, "a", encoding="utf-8"))

    def write(self, row: dict[str, Any]) -> None:
        if not self.files:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        timing = {k: v for k, v in clean.items() if is_timing(k)}
        parts = ({k: v for k, v in clean.items() if k not in timing}, {"step": clean.get("step"), **timing})
        for f, part in zip(self.files, parts):
            f.write(json.dumps(part, allow_nan=False) + "\n")
            f.flush()
        if self.trackers is not None:
            self.trackers.log(clean)

    def close(self) -> None:
        for f in self.files:
            f.close()
        if self.trackers is not None:
            self.trackers.close()


TIMINGS = "timings.jsonl"


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched against torch.cuda.get_device_name().
_PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("H800", 989.0), ("GH200", 989.0), ("B200", 2250.0),
                     ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("A10G", 70.0),
                     ("A10", 125.0), ("L4", 121.0), ("4090", 165.0), ("3090", 71.0), ("V100", 125.0), ("T4", 65.0))


def peak_flops(device: torch.device, peak_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of one device: the configured value, else a table lookup by GPU name; None on CPU / unknown."""
    if peak_tflops > 0:
        return peak_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in _PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def mfu(tokens_per_s: float, flops_token: float, peak: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak of all devices."""
    if not peak:
        return None
    return tokens_per_s * flops_token / (peak * world_size)
