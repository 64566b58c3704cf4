"""jgen: deep generative models in JAX."""
