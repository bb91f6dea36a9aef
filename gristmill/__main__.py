"""`python -m gristmill ...` (and `torchrun -m gristmill pretrain ...`): the same CLI."""
import sys

from gristmill.cli import main

sys.exit(main())
