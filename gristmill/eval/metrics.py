"""Metrics: per-example verdicts from scores, task means with standard errors, centring by the random baseline, the CORE average."""
from __future__ import annotations

import math
from typing import Any

from gristmill.eval.loglik import Score


def choose(scores: list[Score], choice_chars: list[int]) -> dict[str, int]:
    """The candidate each rule picks: acc = highest summed log-prob; acc_norm = highest log-prob per character of
    the choice (lm-evaluation-harness's acc_norm; lighteval's acc_norm_nospace, the delimiter's space not counted);
    acc_mean = lowest mean loss per token (CORE). Ties go to the first candidate, as argmax does."""
    def best(key: Any) -> int:
        vals = [key(s, n) for s, n in zip(scores, choice_chars)]
        return max(range(len(vals)), key=lambda i: (vals[i], -i))
    return {"acc": best(lambda s, n: s.logprob), "acc_norm": best(lambda s, n: s.logprob / max(n, 1)),
            "acc_mean": best(lambda s, n: s.logprob / max(s.tokens, 1))}


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean with the sample variance): lm-evaluation-harness's stderr for acc."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = sum(values) / n
    if n == 1:
        return m, math.nan
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def centered(value: float, baseline: float) -> float:
    """(value - baseline) / (1 - baseline): 0 at chance, 1 at perfect (CORE's centring; baseline a fraction)."""
    return (value - baseline) / (1 - baseline)


def interval(value: float, stderr: float) -> list[float] | None:
    """The 95 % normal interval of a mean."""
    if not math.isfinite(stderr):
        return None
    return [value - 1.96 * stderr, value + 1.96 * stderr]


def task_result(task: Any, per_example: list[dict[str, float]], *, baseline: float,
                extra: dict[str, Any] | None = None, groups: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """results.json's entry for one task: every metric's mean and stderr, the headline (`task.metric`), n, the
    random baseline and the centred headline. `groups` (MMLU's subjects: name -> example positions) makes the
    headline the mean over groups, as lighteval averages MMLU's 57 subject tasks."""
    names = list(per_example[0]) if per_example else []
    metrics, stderrs = {}, {}
    for k in names:
        metrics[k], stderrs[k] = mean_stderr([e[k] for e in per_example])
    value, err = metrics.get(task.metric, math.nan), stderrs.get(task.metric, math.nan)
    out: dict[str, Any] = {}
    if groups:
        means = {g: mean_stderr([per_example[i][task.metric] for i in idx])[0] for g, idx in sorted(groups.items())}
        value = sum(means.values()) / len(means)
        # the macro mean's stderr with the pooled per-example variance (a subject limited to one example has
        # no variance of its own): sqrt(var * sum(1 / n_g)) / G
        n = len(per_example)
        pooled = (stderrs[task.metric] ** 2) * n if n > 1 else math.nan
        err = math.sqrt(pooled * sum(1 / len(idx) for idx in groups.values())) / len(groups)
        out["by_group"] = {g: round(v, 6) for g, v in means.items()}
        out["micro"] = metrics.get(task.metric)
    return {"metric": task.metric, "value": value, "stderr": err, "ci95": interval(value, err), "n": len(per_example),
            "random_baseline": baseline, "centered": centered(value, baseline) if baseline < 1 else None,
            "metrics": metrics, "stderrs": stderrs, **out, **(extra or {})}


def core_score(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """CORE: the mean of the centred accuracies of the CORE tasks evaluated (DCLM defines it over 22; the count
    is recorded so a partial CORE is never mistaken for the whole)."""
    core = {k: v for k, v in results.items() if k.startswith("core.") and v.get("centered") is not None}
    if not core:
        return None
    vals = [v["centered"] for v in core.values()]
    # the tasks are independent samples: stderr of the mean of centred scores
    errs = [v["stderr"] / (1 - v["random_baseline"]) for v in core.values() if math.isfinite(v["stderr"])]
    err = math.sqrt(sum(e * e for e in errs)) / len(vals) if errs else math.nan
    return {"value": sum(vals) / len(vals), "stderr": err, "tasks": len(vals), "of": 22, "members": sorted(core)}
