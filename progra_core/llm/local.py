"""In-process generation for ``local/`` models: many requests per forward pass.

Requests are grouped by sampling settings, sorted by prompt length (little padding), and generated
in left-padded batches. One backend per model folder per process; a lock serialises generation so
concurrent stage threads share the weights instead of loading copies.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

from progra_core.llm.gateway import ChatRequest, ChatResult

__all__ = ["LocalBackend", "get_backend"]


class LocalBackend:
    def __init__(self, path: str, dtype: str = "float32", device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = path
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval()
        self._lock = threading.Lock()

    def _prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, reqs: Sequence[ChatRequest], batch_size: int = 8) -> list[ChatResult]:
        import torch

        prompts = [self._prompt(r.messages) + (r.prefix or "") for r in reqs]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(reqs):
            groups[(round(r.temperature, 4), float(r.extra.get("repetition_penalty", 1.0)))].append(i)
        out: list[ChatResult | None] = [None] * len(reqs)
        with self._lock, torch.no_grad():
            for (temp, rep), idx in groups.items():
                idx.sort(key=lambda i: lengths[i])
                for s in range(0, len(idx), batch_size):
                    chunk = idx[s:s + batch_size]
                    t0 = time.perf_counter()
                    enc = self.tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True,
                                         add_special_tokens=False).to(self.device)
                    max_new = max(reqs[i].max_tokens for i in chunk)
                    seed = reqs[chunk[0]].seed
                    torch.manual_seed(seed if seed is not None else 0)
                    gen_kwargs = dict(max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id)
                    if rep != 1.0:
                        gen_kwargs["repetition_penalty"] = rep
                    stops = {tuple(reqs[i].stop or ()) for i in chunk}
                    if len(stops) == 1 and next(iter(stops)):
                        gen_kwargs.update(stop_strings=list(next(iter(stops))), tokenizer=self.tokenizer)
                    if temp > 0:
                        gen_kwargs.update(do_sample=True, temperature=temp, top_p=1.0, top_k=0)
                    else:
                        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                    seqs = self.model.generate(**enc, **gen_kwargs)
                    new = seqs[:, enc["input_ids"].shape[1]:]
                    dt = (time.perf_counter() - t0) * 1000 / len(chunk)
                    for row, i in zip(new.tolist(), chunk, strict=True):
                        r = reqs[i]
                        eos = self.tokenizer.eos_token_id
                        toks = row[: r.max_tokens]
                        finish = "length"
                        if eos in toks:
                            toks = toks[: toks.index(eos)]
                            finish = "stop"
                        toks = [t for t in toks if t != self.tokenizer.pad_token_id]
                        text = (r.prefix or "") + self.tokenizer.decode(toks, skip_special_tokens=True)
                        for stop in r.stop or []:
                            at = text.find(stop, len(r.prefix or ""))
                            if at >= 0:
                                text, finish = text[:at], "stop"
                        out[i] = ChatResult(text=text, model=r.model, role=r.role, id=r.id, finish_reason=finish,
                                            prompt_tokens=lengths[i], completion_tokens=len(toks), latency_ms=dt, attempts=1)
        return out  # type: ignore[return-value]


@lru_cache(maxsize=4)
def get_backend(path: str, dtype: str = "float32") -> LocalBackend:
    return LocalBackend(path, dtype=dtype)
