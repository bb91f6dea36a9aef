"""Run under torchrun by the DDP tests: one pretrain run with a tiny config (JSON overrides) and optional faults."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from faults import Faults
from gristmill.pretrain.run import run_pretrain
from pretrain_helpers import tiny

if __name__ == "__main__":
    tok, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    faults = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    run_pretrain(tiny(**overrides), {"data": [Path(tok)]}, Path(out), hooks=Faults(**faults))
