"""Trained adapters under a store's root: ``<root>/models/<stage>/<model_id>``, stored as
safetensors and JSON only (a pickle would run whatever it holds when loaded)."""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from pathlib import Path

from progra_core.train.checkpoints import Checkpointing
from storage.manifest import NAME

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

    def checkpointing(self, stage: str, model_id: str, save_steps: int, save_total_limit: int,
                      staging: str | os.PathLike = ".progra-local/checkpoints") -> Checkpointing | None:
        """Where the training of ``<stage>/<model_id>`` saves and resumes: ``<root>/checkpoints/<stage>/<model_id>``,
        written in place on a local root, mirrored from a local staging folder elsewhere; None when
        ``save_steps`` is 0."""
        if not save_steps:
            return None
        final = self._join("checkpoints", stage, model_id)
        if self.is_local:
            return Checkpointing(local=final, save_steps=save_steps, save_total_limit=save_total_limit)
        return Checkpointing(local=str(Path(staging, stage, model_id).resolve()), remote=self.url(final),
                             save_steps=save_steps, save_total_limit=save_total_limit)

    def tracking_dir(self, stage: str, model_id: str, staging: str | os.PathLike = ".progra-local/tracking") -> tuple[str, str | None]:
        """(folder a tracker writes to, URL it is copied to afterwards or None): ``<root>/tracking/<stage>/<model_id>``
        itself on a local root; a local staging folder elsewhere (TensorBoard writes local files)."""
        final = self._join("tracking", stage, model_id)
        if self.is_local:
            return final, None
        return str(Path(staging, stage, model_id).resolve()), self.url(final)

    def put_tree(self, local_dir: str | os.PathLike, url: str) -> None:
        """Copy a local folder's files to ``url`` under this root, file by file."""
        base = self.fs._strip_protocol(url)
        for p in sorted(Path(local_dir).rglob("*")):
            if p.is_file():
                self.fs.put_file(str(p), posixpath.join(base, p.relative_to(local_dir).as_posix()))

    def local_model(self, path: str, cache_dir: str | os.PathLike = ".progra-local/models-fetched") -> str:
        """A folder this process can load an adapter from. On a local root: the ``<stage>/<model_id>``
        the path names, under *this* root's ``models/`` (a row's path was absolute on the machine and
        folder that wrote it; a copied or moved root still finds its own adapters, and a row cannot
        point outside the root). Elsewhere: a copy fetched once per machine (the folder name is the
        model id, which never changes)."""
        if self.is_local:
            parts = posixpath.normpath(path.replace(os.sep, "/")).split("/")
            if len(parts) < 3 or parts[-3] != "models" or not all(NAME.match(p) for p in parts[-2:]):
                raise ValueError(f"{path!r} is not a model folder (…/models/<stage>/<model id>)")
            mine = self.model_dir(*parts[-2:])
            if not os.path.isfile(os.path.join(mine, "adapter_config.json")):
                raise FileNotFoundError(f"adapter {parts[-2]}/{parts[-1]} is not under this root's models folder "
                                        f"({self._join('models')}); its row says {path!r}")
            return mine
        if "://" not in path:
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
