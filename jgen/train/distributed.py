"""Multi-host start-up through JAX's own `jax.distributed`.

One process per host (or per GPU); every process runs the same command. The
coordinator address, the number of processes and this process's id come from
flags or from the environment variables JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID. With `auto=True`, JAX detects them
itself (TPU pods, SLURM, Open MPI). With none of these, the run is single-process.
"""

import os

import jax


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    coordinator_bind_address: str | None = None,
    auto: bool = False,
) -> bool:
    """Joins the JAX cluster if one is configured; returns whether it did."""
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if auto and coordinator_address is None:
        jax.distributed.initialize()
        return True
    if coordinator_address is None:
        if num_processes not in (None, 1):
            raise ValueError(
                f"num_processes={num_processes} but no coordinator address: pass "
                "--coordinator-address HOST:PORT (or set JAX_COORDINATOR_ADDRESS)."
            )
        return False
    if num_processes is None or process_id is None:
        raise ValueError(
            f"coordinator_address={coordinator_address!r} needs num_processes and process_id "
            f"(got {num_processes} and {process_id}); pass --num-processes and --process-id "
            "or set JAX_NUM_PROCESSES and JAX_PROCESS_ID."
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} must be in [0, {num_processes}).")
    host = coordinator_address.rsplit(":", 1)[0]
    if coordinator_bind_address is None and host in ("127.0.0.1", "localhost"):
        coordinator_bind_address = coordinator_address  # a local cluster: bind loopback only
    kwargs = {}
    if coordinator_bind_address is not None:
        kwargs["coordinator_bind_address"] = coordinator_bind_address
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    return True
