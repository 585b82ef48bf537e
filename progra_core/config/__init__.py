"""One pydantic ``PipelineConfig`` (:mod:`.pipeline`; its sections in :mod:`.runtime`, :mod:`.data`,
:mod:`.train`, :mod:`.evaluate` on :mod:`.base`) and how it is read from profiles, files and
``--set`` overrides (:mod:`.loading`). Import from here: ``from progra_core.config import ...``."""

from progra_core.config import base, data, evaluate, pipeline, runtime, train
from progra_core.config.base import *  # noqa: F403 - the section classes, module by module
from progra_core.config.data import *  # noqa: F403
from progra_core.config.evaluate import *  # noqa: F403
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
from progra_core.config.pipeline import *  # noqa: F403
from progra_core.config.runtime import *  # noqa: F403
from progra_core.config.train import *  # noqa: F403

_sections = [n for m in (base, runtime, data, train, evaluate, pipeline) for n in m.__all__]

__all__ = ["load_config", "resolve_config", "apply_overrides", "CONFIGS_DIR", "profile_names", "ConfigInputError",
           "read_yaml", "MAX_CONFIG_BYTES", "MAX_OVERRIDE_CHARS", *_sections]
