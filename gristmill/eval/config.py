"""EvalConfig: the [eval] section of a recipe (tasks, few-shot counts, limits, seed, batching, generation)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


@dataclass(kw_only=True)
class EvalConfig:
    """What to evaluate and how; every field is recorded in the manifest, so a change re-runs the stage."""

    #: task or group names (`gristmill eval --list` shows them), or FILE:FORMAT for a task file of your own
    #: given as a --data input (format: multiple_choice, schema, language_modeling, generative)
    tasks: list[str] = field(default_factory=lambda: ["core"])
    #: examples per task, the first N in the task's order (CORE tasks: after their seeded shuffle); 0 = all
    limit: int = 0
    #: per-task limits that override `limit`, e.g. { mmlu = 500 }
    limits: dict[str, int] = field(default_factory=dict)
    #: per-task few-shot counts that override the task's own (CORE's table, 0 for the rest), e.g. { gsm8k = 5 }
    shots: dict[str, int] = field(default_factory=dict)
    #: few-shot draws: example i's shots come from random.Random(seed + i), never example i itself (CORE's rule)
    seed: int = 1234
    #: rows per forward; each row packs whole examples (a shared context once, its continuations after it)
    batch_size: int = 16
    #: tokens per example at most; a longer one loses the start of its context (counted as truncated). 0 = the
    #: model's context (max_position_embeddings)
    max_length: int = 0
    #: generative tasks: render prompts with the model's chat template (instruct models); false = plain text
    chat: bool = False
    #: generative tasks: tokens generated per answer at most (greedy)
    max_new_tokens: int = 256
    #: judged tasks (alpaca_eval): reward scores closer than this count as a tie (float noise of the packed layout)
    tie_tolerance: float = 1e-4
    #: where to run: auto = CUDA when available, else CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: weights dtype: auto = bf16 on CUDA, fp32 on CPU
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    def __post_init__(self) -> None:
        _need(bool(self.tasks), "eval.tasks is empty; name tasks or groups, e.g. --set 'eval.tasks=[\"core\"]'")
        _need(self.limit >= 0, f"eval.limit={self.limit} is negative; 0 = every example")
        for name, n in self.limits.items():
            _need(n >= 0, f"eval.limits.{name}={n} is negative; 0 = every example")
        for name, n in self.shots.items():
            _need(n >= 0, f"eval.shots.{name}={n} is negative")
        _need(self.batch_size >= 1, f"eval.batch_size={self.batch_size} must be at least 1")
        _need(self.max_length >= 0, f"eval.max_length={self.max_length} is negative; 0 = the model's context")
        _need(self.max_new_tokens >= 1, f"eval.max_new_tokens={self.max_new_tokens} must be at least 1")
        _need(math.isfinite(self.tie_tolerance) and self.tie_tolerance >= 0,
              f"eval.tie_tolerance={self.tie_tolerance} must be a finite number >= 0")

    def limit_for(self, task: str) -> int:
        return self.limits.get(task, self.limit)
