"""Reading configs: profiles from ``configs/<name>.yaml`` (by name only), a file, ``--set a.b=c``
overrides (values as YAML), all bounded and alias-free, validated into ``PipelineConfig``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from progra_core.config.pipeline import PipelineConfig

__all__ = ["load_config", "resolve_config", "apply_overrides", "CONFIGS_DIR", "profile_names", "ConfigInputError",
           "read_yaml", "MAX_CONFIG_BYTES", "MAX_OVERRIDE_CHARS"]

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


def profile_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


MAX_CONFIG_BYTES = 1 << 20
MAX_OVERRIDE_CHARS = 1 << 16


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a config never needs them, and nested aliases expand
    exponentially (the 'billion laughs' bomb that hangs at ~1 GB)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigInputError(f"YAML aliases are not allowed in a config (alias *{event.anchor} at {event.start_mark})")
        return super().compose_node(parent, index)


# YAML 1.1 (PyYAML) reads `1e-4` as text: its floats need a dot and a signed exponent. YAML 1.2
# reads it as a number, as a user typing `--set sft.learning_rate=1e-4` means it.
_NoAliasLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


class ConfigInputError(ValueError):
    """Config text that cannot be read: too large, not YAML, aliases, a profile outside configs/."""


def read_yaml(text: str, what: str) -> Any:
    """Bounded, alias-free YAML (configs and ``--set`` values)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigInputError(f"{what} is {len(text)} characters (limit {MAX_CONFIG_BYTES})")
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def _parse_value(raw: str) -> Any:
    """A ``--set`` value as YAML (numbers, lists, null...); text that is not YAML stays text."""
    if len(raw) > MAX_OVERRIDE_CHARS:
        raise ConfigInputError(f"override value of {len(raw)} characters (limit {MAX_OVERRIDE_CHARS})")
    try:
        return read_yaml(raw, "override")
    except ConfigInputError:
        raise
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides (values parsed as YAML: numbers, lists, null...)."""
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


def resolve_config(config: PipelineConfig | dict | None = None, profile: str | None = None,
                   overrides: list[str] | None = None) -> PipelineConfig:
    """What a flow run was given, merged by one rule: the profile (else the embedded one), then
    every field of ``config`` (the UI form) that differs from the embedded profile, then the
    ``key=value`` overrides. So choosing ``profile: paper`` in the form keeps what was edited in
    the config form instead of silently dropping it, and a form left as it is changes nothing."""
    if profile:
        data = load_config(profile).model_dump(mode="json")
        if config is not None:
            form = config.model_dump(mode="json") if isinstance(config, PipelineConfig) else dict(config)
            data = _merge(data, _edited(form, load_config("embedded").model_dump(mode="json")))
        return PipelineConfig.model_validate(apply_overrides(data, overrides))
    if config is None:
        return load_config("embedded", overrides=overrides)
    data = config.model_dump(mode="json") if isinstance(config, PipelineConfig) else dict(config)
    return PipelineConfig.model_validate(apply_overrides(data, overrides))


def _edited(form: dict, default: dict) -> dict:
    """The leaves of ``form`` that differ from ``default`` (the profile's own name excluded)."""
    out = {}
    for k, v in form.items():
        if k == "profile" or default.get(k, object()) == v:
            continue
        out[k] = _edited(v, default[k]) if isinstance(v, dict) and isinstance(default.get(k), dict) else v
    return out


def _merge(base: dict, top: dict) -> dict:
    return {**base, **{k: _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in top.items()}}


def load_config(profile: str | None = "embedded", path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """The profile's YAML (``configs/<profile>.yaml``), then a config file layered over it, then
    ``--set`` overrides. A file names only what it changes: it is merged over the profile its own
    ``profile:`` names when that is one in configs/, else over ``profile`` (a partial file used to
    replace the profile, so every field it left out fell back to the bare defaults)."""
    data: Any = {}
    if path is not None:
        top = _read_config_file(Path(path), str(path))
        named = top.get("profile") if isinstance(top, dict) else None
        base = named if isinstance(named, str) and named in profile_names() else profile
        data = _merge(_profile_data(base), top) if base else top
    elif profile:
        data = _profile_data(profile)
    data = apply_overrides(data, overrides)
    return PipelineConfig.model_validate(data)


def _profile_data(profile: str) -> dict[str, Any]:
    if not isinstance(profile, str) or not _PROFILE.fullmatch(profile) or profile not in profile_names():
        raise ConfigInputError(f"unknown profile {str(profile)[:60]!r}; available: {profile_names()} (a profile is a "
                               "name in configs/, not a path: use --config FILE for a file)")
    data = _read_config_file(CONFIGS_DIR / f"{profile}.yaml", f"profile {profile}")
    data.setdefault("profile", profile)
    return data


_PROFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _read_config_file(path: Path, what: str) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ConfigInputError(f"cannot read {what}: {e}") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigInputError(f"{what} is {size} bytes (limit {MAX_CONFIG_BYTES})")
    try:
        data = read_yaml(path.read_text(), what)
    except yaml.YAMLError as e:
        raise ConfigInputError(f"{what} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigInputError(f"{what} must be a mapping of sections, got {type(data).__name__}")
    return data
