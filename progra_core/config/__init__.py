"""One pydantic ``PipelineConfig`` (:mod:`.sections`) and how it is read from profiles, files
and ``--set`` overrides (:mod:`.loading`). Import from here: ``from progra_core.config import ...``."""

from progra_core.config.loading import (
    CONFIGS_DIR,
    MAX_CONFIG_BYTES,
    MAX_OVERRIDE_CHARS,
    ConfigInputError,
    apply_overrides,
    load_config,
    profile_names,
    read_yaml,
    resolve_config,
)
from progra_core.config.sections import *  # noqa: F403 - every section class
from progra_core.config.sections import __all__ as _sections

__all__ = ["load_config", "resolve_config", "apply_overrides", "CONFIGS_DIR", "profile_names", "ConfigInputError",
           "read_yaml", "MAX_CONFIG_BYTES", "MAX_OVERRIDE_CHARS", *_sections]
