"""Experiment tracking for the training stages, through the trainer's own ``report_to``.

TensorBoard is the default because it works offline and needs no server: event files go into
one folder per model (``<root>/tracking/<stage>/<model id>``), so ``tensorboard --logdir
<root>/tracking`` shows every run of a root side by side. progra opens that writer itself
instead of naming ``"tensorboard"`` in ``report_to``, for two reasons: the folder is the model's
(transformers would pick ``<output_dir>/runs/<date>``, a temporary folder here), and a resumed
run must drop what the killed one logged after its checkpoint (``purge_step``), or TensorBoard
would show those steps twice. The run's params (config, dataset ids, model id) are written as
text beside the scalars. Any other name (``mlflow``, ``wandb``, ``trackio``, ...) goes to
``report_to`` unchanged and is configured by that tracker's own environment variables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ["Tracking", "tracking_setup", "read_scalars"]


@dataclass(frozen=True)
class Tracking:
    """Plain data (it crosses into an ``accelerate launch`` job): the trackers, the TensorBoard
    folder of this model and the params to log once."""

    report_to: tuple[str, ...] = ("tensorboard",)
    log_dir: str | None = None
    params: dict = field(default_factory=dict)


def tracking_setup(tracking: Tracking | None, start_step: int = 0) -> tuple[list, list[str]]:
    """(callbacks, ``report_to``) for a trainer. ``start_step``: the checkpoint a run resumes
    from; TensorBoard forgets the killed run's later events."""
    if tracking is None:
        return [], []
    others = [t for t in tracking.report_to if t != "tensorboard"]
    if "tensorboard" not in tracking.report_to or not tracking.log_dir:
        return [], others
    from accelerate import PartialState
    from transformers import TrainerCallback
    from transformers.integrations import TensorBoardCallback

    if not PartialState().is_main_process:  # one writer per run
        return [], others
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=tracking.log_dir, purge_step=start_step + 1 if start_step else None)
    params = tracking.params

    class _Params(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if params and not start_step:
                writer.add_text("progra/params", "\n".join(f"    {k}: {json.dumps(v, default=str)}" for k, v in params.items()))
                writer.flush()

    return [TensorBoardCallback(tb_writer=writer), _Params()], others


def read_scalars(log_dir: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar as TensorBoard's own reader sees it (purged events dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]
