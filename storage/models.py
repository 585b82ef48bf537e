"""Trained adapters under a store's root: ``<root>/models/<stage>/<model_id>``, stored as
safetensors and JSON only (a pickle would run whatever it holds when loaded)."""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from pathlib import Path

__all__ = ["ModelFolders", "PICKLE_SUFFIXES", "DROPPED"]

#: file suffixes that are pickles (torch.save, pickle): never stored under a root
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
#: files a trainer leaves beside the adapter that are pickles and not needed to load it
DROPPED = frozenset({"training_args.bin"})


class ModelFolders:
    """Model folders of a :class:`~storage.store.DatasetStore` (uses its ``fs``, ``_join``,
    ``is_local`` and ``url``)."""

    def model_dir(self, stage: str, model_id: str) -> str:
        return self._join("models", stage, model_id)

    def put_model(self, local_dir: str | os.PathLike, stage: str, model_id: str) -> str:
        """Move a finished local adapter folder to ``<root>/models/<stage>/<model_id>`` (a rename
        on local roots, an upload elsewhere) and return its path; an existing one is kept."""
        final = self.model_dir(stage, model_id)
        if self.fs.exists(posixpath.join(final, "adapter_config.json")):
            return self.url(final)
        pickled = [p.relative_to(local_dir).as_posix() for p in Path(local_dir).rglob("*")
                   if p.suffix in PICKLE_SUFFIXES and p.name not in DROPPED]
        if pickled:  # torch .bin/.pt files are pickles: loading one runs whatever it holds
            raise ValueError(f"{stage} {model_id}: {', '.join(pickled)} would be stored as pickles; models are stored "
                             "as safetensors and JSON only (save with safe_serialization=True)")
        if self.is_local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"

            shutil.copytree(local_dir, tmp, ignore=lambda d, names: [n for n in names if n in DROPPED])
            try:
                os.rename(tmp, final)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not os.path.exists(os.path.join(final, "adapter_config.json")):
                    raise
        else:  # readers look for adapter_config.json: it goes up last, after the weights
            files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file() and p.name not in DROPPED)
            marker = [p for p in files if p.relative_to(local_dir).as_posix() == "adapter_config.json"]
            for p in [p for p in files if p not in marker] + marker:
                self.fs.put_file(str(p), posixpath.join(final, p.relative_to(local_dir).as_posix()))
        return self.url(final)

    def local_model(self, path: str, cache_dir: str | os.PathLike = ".progra-local/models-fetched") -> str:
        """A folder this process can load an adapter from: ``path`` itself on a local root, else a
        copy fetched once per machine (the folder name is the model id, which never changes)."""
        if self.is_local or "://" not in path:
            return path
        rel = posixpath.relpath(posixpath.normpath(self.fs._strip_protocol(path)), self._join("models"))
        parts = rel.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):  # <stage>/<model_id> under this root's models/
            raise ValueError(f"{path!r} is not a model folder under {self.url(self._join('models'))}")
        dest = Path(cache_dir) / rel
        if not (dest / "adapter_config.json").exists():
            tmp = dest.with_name(f"{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
            self.fs.get(self.fs._strip_protocol(path).rstrip("/") + "/", str(tmp), recursive=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, dest)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        return str(dest.resolve())
