"""Training: TrainState, the compiled step, meshes and shardings, the loop."""

from jgen.train.mesh import batch_sharding, make_mesh, replicated
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState, create_train_state
from jgen.train.step import make_train_step

__all__ = [
    "TrainState", "batch_sharding", "create_train_state", "make_mesh", "make_optimizer",
    "make_train_step", "replicated",
]
