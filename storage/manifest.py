"""What a dataset's ``_manifest.json`` may hold, checked before any reader follows it: names
confined to the dataset's own folder, strict types, a digest for every named file. Kept apart
from the store so the rule is one small thing to read."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["NAME", "Manifest", "check_name"]

#: dataset ids and stage names: one path segment, never ``..``, a glob or a separator
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_PART = re.compile(r"^part-[A-Za-z0-9_-]{1,64}\.parquet$")
_REJECTS = re.compile(r"^rejects(-[A-Za-z0-9]{1,32})?\.parquet$")


def check_name(value: str, what: str = "dataset id") -> str:
    """``value`` if it is one plain path segment (an id or a stage), else ``ValueError``: an id given
    as ``../x`` or an absolute path must never resolve into another folder or root."""
    if not isinstance(value, str) or not NAME.match(value):
        raise ValueError(f"{what} {str(value)[:80]!r} is not a plain name (letters, digits, '_' and '-')")
    return value


class Manifest(BaseModel):
    """What ``_manifest.json`` may hold, checked before a reader follows it: strict types, file
    names confined to the dataset's own folder (no path, glob or ``..``), each named once, a digest
    for every file a current writer names. Older manifests (no ``files``/``digests``) still load."""

    model_config = ConfigDict(strict=True, extra="forbid")
    dataset_id: str
    stage: str
    path: str
    rows: int = Field(ge=0)
    bytes: int = Field(0, ge=0)
    rejects: int = Field(0, ge=0)
    parents: list[str] = []
    config: dict = {}
    code_version: str = ""
    flow_run_id: str | None = None
    created_at: str = ""
    stats: dict = {}
    files: list[str] = []
    rejects_name: str = ""
    digests: dict[str, str] = {}

    @field_validator("dataset_id", "stage")
    @classmethod
    def _plain(cls, v: str) -> str:
        return check_name(v, "name")

    @field_validator("parents")
    @classmethod
    def _parents(cls, v: list[str]) -> list[str]:
        return [check_name(p, "parent id") for p in v]

    @field_validator("files")
    @classmethod
    def _files(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if not _PART.match(x)]
        if bad:
            raise ValueError(f"part names must be part-<name>.parquet inside the dataset folder, got {bad[0][:80]!r}")
        if len(set(v)) != len(v):
            raise ValueError("a part is named twice")
        return v

    @field_validator("rejects_name")
    @classmethod
    def _rejects_name(cls, v: str) -> str:
        if v and not _REJECTS.match(v):
            raise ValueError(f"the rejects file must be rejects[-<writer>].parquet, got {v[:80]!r}")
        return v

    @field_validator("created_at")
    @classmethod
    def _created(cls, v: str) -> str:
        if v:
            datetime.fromisoformat(v)
        return v

    @model_validator(mode="after")
    def _digests(self) -> Manifest:
        named = {*self.files, *([self.rejects_name] if self.rejects_name else [])}
        if set(self.digests) - named:
            raise ValueError("a digest names a file the manifest does not")
        if self.digests and set(self.digests) != named:
            raise ValueError("some named files have no digest")
        if any(not re.fullmatch(r"[0-9a-f]{64}", d) for d in self.digests.values()):
            raise ValueError("a digest is not a sha256 hex string")
        return self
