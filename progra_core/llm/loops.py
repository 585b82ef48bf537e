"""Stopping a generation that is stuck in a loop: the stopping criterion every in-process
generation (:func:`progra_core.llm.local.prefix_generate`) uses."""

from __future__ import annotations

__all__ = ["LOOP_WINDOW", "LoopStop"]

#: a completion that has produced the same this-many tokens three times is stuck in a loop and stops
#: there (:class:`LoopStop`). Chosen on D_sft: no training target repeats a 24-token window more
#: than twice (16-token windows: 8 of 563 targets do three times)
LOOP_WINDOW = 24


class LoopStop:
    """A transformers stopping criterion: a row whose completion holds one ``window``-token run
    three times stops (a greedy small model that starts writing its summary or a number again
    does not leave that loop; it would only spend the rest of ``max_new_tokens`` on it). The text
    up to there is kept, so the answer is what it was going to be: unfinished."""

    def __init__(self, prompt_width: int, window: int = LOOP_WINDOW, times: int = 3):
        self.start, self.window, self.times = prompt_width, window, times
        self.stopped_at: dict[int, int] = {}  # row -> completion length when it stopped

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        gen = input_ids[:, self.start:]
        if gen.shape[1] < self.window * self.times:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        windows = gen.unfold(1, self.window, 1)  # (rows, positions, window)
        same = (windows == gen[:, None, -self.window:]).all(-1).sum(-1)  # occurrences of the latest window
        stop = same >= self.times
        for row in stop.nonzero().flatten().tolist():
            self.stopped_at.setdefault(row, gen.shape[1])
        return stop

    def cut(self, rows: list[list[int]]) -> list[list[int]]:
        """Each stopped row up to where it stopped: no padding after it, which a caller would read
        as an end-of-sequence token (SmolLM2 pads with EOS), so the answer is a length cut, as it is."""
        return [r[: self.stopped_at[k]] if k in self.stopped_at else r for k, r in enumerate(rows)]
