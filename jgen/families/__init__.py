"""Model families, looked up by `config.model.family` (the one registry, at the config edge)."""

from jgen.families import (
    autoregressive,
    diffusion,
    ebm,
    flow,
    gan,
    vae,
    vqvae,
    vqvae_prior,
)
from jgen.families.base import ModelSpec

FAMILIES = {
    "autoregressive": autoregressive.build,
    "diffusion": diffusion.build,
    "ebm": ebm.build,
    "flow": flow.build,
    "gan": gan.build,
    "vae": vae.build,
    "vqvae": vqvae.build,
    "vqvae_prior": vqvae_prior.build,
}


def build_model(config, info) -> ModelSpec:
    """The `ModelSpec` for `config.model.family`."""
    name = config.model.family
    if name not in FAMILIES:
        raise ValueError(f"Unknown model.family={name!r}; known families: {', '.join(sorted(FAMILIES))}.")
    return FAMILIES[name](config, info)


__all__ = ["FAMILIES", "ModelSpec", "build_model"]
