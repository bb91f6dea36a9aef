#!/usr/bin/env bash
# Benchmark environment for the ppo mode of bench_align.py: .venv-bench-ppo with TRL 1.12.0, the last release that
# ships a PPO trainer (trl.experimental.ppo.PPOTrainer; 1.13.0 removed it), next to .venv-bench's current TRL.
#
# Its own venv because TRL 1.12.0 and the current TRL cannot share one. torch 2.13.0 (CPU) goes in first (an
# unpinned torch is the multi-GB CUDA build); transformers, peft, accelerate and datasets are pinned to the
# versions .venv-bench has, so both TRL sides run on the same stack. gristmill itself is not installed here:
# trl_side.py's ppo command needs none of it.
#
#     bash benchmarks/setup_bench_ppo_env.sh     # creates .venv-bench-ppo at the repo root (or $BENCH_PPO_VENV)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${BENCH_PPO_VENV:-$ROOT/.venv-bench-ppo}"
PY="$VENV/bin/python"

test -x "$PY" || python3 -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q trl==1.12.0 transformers==5.24.0 peft==0.21.2 accelerate==1.16.0 datasets==5.2.0

"$PY" - <<'PY'
import importlib.metadata as md
for name in ("torch", "transformers", "trl", "peft", "datasets", "accelerate"):
    try:
        print(f"{name:14s} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:14s} MISSING")
import os
os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
from trl.experimental.ppo import PPOTrainer  # noqa: F401  (fails here, not in the benchmark)
print("trl.experimental.ppo.PPOTrainer: ok")
PY
