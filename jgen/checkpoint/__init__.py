"""Orbax checkpointing with resume from the newest restorable step."""

from jgen.checkpoint.manager import CheckpointCorruptWarning, Checkpointer, StructureMismatchError, fingerprint

__all__ = ["CheckpointCorruptWarning", "Checkpointer", "StructureMismatchError", "fingerprint"]
