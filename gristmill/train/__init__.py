"""The training core every training stage shares: loop, checkpoints, schedule, spikes, parallel, metrics log, tracking."""
from gristmill.errors import GristmillError


class TrainError(GristmillError):
    """Training that cannot go on (spikes past the rollback budget, a checkpoint that fails its check); the
    message names the file or setting and what to do."""
