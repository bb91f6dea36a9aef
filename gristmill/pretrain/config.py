"""PretrainConfig: the model size presets, the run length and batch, and the loop settings every training stage shares."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gristmill.train.config import LoopConfig

# Model shapes (Llama: RMSNorm, RoPE, SwiGLU). Parameter counts are for the transformer blocks
# alone; the embedding table adds vocab_size x hidden_size (tied with the output head by default).
#   tiny : 4 x (4*128^2 + 3*128*384)  = 0.85M  (+ 1.0M at vocab 8192)   CPU tests and the demo
#   small: 8 x (4*512^2 + 3*512*1408) = 25.7M  (+ 4.2M at vocab 8192)
#   124m : 12 x (4*768^2 + 3*768*2048) = 85M   (+ 38.6M at vocab 50257)  GPT-2 small scale
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 384},
    "small": {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "intermediate_size": 1408},
    "124m": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 2048},
}
SHAPE_FIELDS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


@dataclass(kw_only=True)
class PretrainConfig(LoopConfig):
    # --- model -----------------------------------------------------------------------------
    #: model size preset: tiny (~1-2M params, CPU), small (~25M), 124m (GPT-2 small scale)
    preset: Literal["tiny", "small", "124m"] = "tiny"
    #: width of the residual stream; 0 = the preset's value
    hidden_size: int = 0
    #: number of transformer blocks; 0 = the preset's value
    num_layers: int = 0
    #: attention heads (hidden_size must divide by it); 0 = the preset's value
    num_heads: int = 0
    #: key/value heads (grouped-query attention when below num_heads); 0 = as many as num_heads
    num_kv_heads: int = 0
    #: SwiGLU inner width; 0 = the preset's value
    intermediate_size: int = 0
    #: share the input embedding with the output head (GPT-2 style; fewer parameters)
    tie_embeddings: bool = True

    # --- run length and batch ----------------------------------------------------------------
    #: optimizer steps to train for (the LR schedule spans exactly this many)
    max_steps: int = 1000
    #: windows per micro-batch on each process
    batch_size: int = 16
    #: micro-batches accumulated per optimizer step (global batch = batch_size * grad_accum * world size)
    grad_accum: int = 1
    #: tokens per training window (the model also sees the next token as the last target)
    seq_len: int = 256
    #: base seed: model init and the data order derive from it
    seed: int = 0
    #: weights of the --data sources, in their order (e.g. [0.8, 0.2]: curated web, reference text); [] = one
    #: source, or several in proportion to their train windows. A source that runs out repeats (the report says so).
    mixture: list[float] = field(default_factory=list)

    # --- evaluation, logging -------------------------------------------------------------------
    #: evaluate validation loss every this many steps (and always at the end); 0 = only at the end
    eval_every: int = 250
    #: size of the fixed validation set, in global batches of windows (the same set whatever the process count)
    eval_batches: int = 4

    # --- hardware ------------------------------------------------------------------------------
    #: where to train: auto = CUDA when available (the local rank's GPU under torchrun), else CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: wrap the model in torch.compile (GPU speed; needs a C++ compiler on CPU)
    compile: bool = False
    #: shard parameters with FSDP2 (fully_shard) instead of DDP when running under torchrun
    fsdp: bool = False
    #: peak dense bf16 TFLOP/s of one device, for MFU; 0 = guess from the GPU name
    peak_tflops: float = 0.0

    def __post_init__(self) -> None:
        self.check_loop("pretrain")
        for name in ("max_steps", "batch_size", "grad_accum", "seq_len", "eval_batches"):
            v = getattr(self, name)
            _need(v >= 1, f"pretrain.{name}={v} must be at least 1; set --set pretrain.{name}=1 or more")
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
            v = getattr(self, name)
            _need(v >= 0, f"pretrain.{name}={v} is negative; use 0 or more")
        _need(self.optim.warmup_steps <= self.max_steps,
             f"pretrain.optim.warmup_steps={self.optim.warmup_steps} exceeds pretrain.max_steps={self.max_steps}; "
             f"lower it (e.g. --set pretrain.optim.warmup_steps={max(0, self.max_steps // 10)})")
        _need(all(w > 0 for w in self.mixture), f"pretrain.mixture={self.mixture}: every weight must be > 0; "
              "leave a source out of --data instead of giving it 0")
        _need(self.peak_tflops >= 0, f"pretrain.peak_tflops={self.peak_tflops} is negative; 0 = guess from the GPU")
        shape = self.model_shape()
        _need(shape["hidden_size"] % shape["num_heads"] == 0,
             f"pretrain.hidden_size={shape['hidden_size']} does not divide by pretrain.num_heads={shape['num_heads']}; "
             "choose a head count that divides it")
        _need(shape["num_heads"] % shape["num_kv_heads"] == 0,
             f"pretrain.num_heads={shape['num_heads']} does not divide by pretrain.num_kv_heads={shape['num_kv_heads']}; "
             "set num_kv_heads to a divisor of num_heads")
        _need((shape["hidden_size"] // shape["num_heads"]) % 2 == 0,
             f"head size {shape['hidden_size'] // shape['num_heads']} (hidden_size / num_heads) must be even for RoPE")

    def model_shape(self) -> dict[str, int]:
        """The preset's shape with every non-zero explicit field laid over it."""
        shape = dict(MODEL_PRESETS[self.preset])
        for name in SHAPE_FIELDS:
            if getattr(self, name):
                shape[name] = getattr(self, name)
        shape.setdefault("num_kv_heads", shape["num_heads"])  # presets use full multi-head attention
        return shape
