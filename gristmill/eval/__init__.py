"""Evaluation: the field's benchmarks (CORE, MMLU, HellaSwag, ARC, PIQA, LAMBADA, GSM8K, IFEval, AlpacaEval) as a stage with its manifest."""
from gristmill.errors import GristmillError


class EvalError(GristmillError):
    """An evaluation task, file or setting that cannot work as given; the message says what to change."""
