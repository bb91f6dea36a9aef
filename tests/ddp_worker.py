"""Run under torchrun by the DDP tests: one pretrain, sft or dpo run with a tiny config (JSON overrides) and optional faults."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from faults import Faults

if __name__ == "__main__":
    stage, out, overrides = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    faults = Faults(**json.loads(sys.argv[4]))
    inputs = {k: [Path(p) for p in v] for k, v in json.loads(sys.argv[5]).items()}
    if stage == "pretrain":
        from gristmill.pretrain.run import run_pretrain
        from pretrain_helpers import tiny

        run_pretrain(tiny(**overrides), inputs, out, hooks=faults)
    elif stage == "sft":
        from align_helpers import sft_config
        from gristmill.align.sft import run_sft

        run_sft(sft_config(**overrides), inputs, out, hooks=faults)
    else:
        from align_helpers import dpo_config
        from gristmill.align.dpo import run_dpo

        run_dpo(dpo_config(**overrides), inputs, out, hooks=faults)
