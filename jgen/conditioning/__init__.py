"""One conditioning interface for every family (see `jgen.conditioning.spec`).

    spec = resolve(config, info)            # None for an unconditional model
    c = condition_of(spec, batch, key)      # the raw condition of a batch
    vec, cmap = ConditionEncoder(spec)(c, drop)
"""

from jgen.conditioning.encoder import ConditionEncoder, TextEncoder, drop_mask
from jgen.conditioning.spec import (
    KINDS,
    OPERATORS,
    ConditionSpec,
    box_mask,
    check_condition,
    condition_config,
    condition_of,
    default_condition,
    inpaint_masks,
    lift,
    measure,
    resolve,
)

__all__ = [
    "KINDS", "OPERATORS", "ConditionEncoder", "ConditionSpec", "TextEncoder", "box_mask", "check_condition",
    "condition_config", "condition_of", "default_condition", "drop_mask", "inpaint_masks", "lift", "measure",
    "resolve",
]
