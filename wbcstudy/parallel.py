"""Independent training runs side by side: a pool of spawned one-thread worker processes.

On a two-core CPU two single-thread runs side by side use the cores better than one run with two
threads, whose small convolutions and matrix products barely split (the HemaX chapter measured 4.9 s
per epoch on one thread against 3.7 s on two: two runs at once train ≈ 1.5× as many epochs per second).
A run in a worker gives the results of one-thread training (a different thread count changes only
the floating-point rounding). Workers are spawned, not forked, so that no thread pool or accelerator
state of the parent is copied into them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["worker_pool", "map_jobs", "run_jobs"]


def _start_worker(initializer: Callable[..., None] | None, initargs: Sequence[Any], forced: str | None = None) -> None:
    """Initialise a worker process: one intra-op thread, the parent's forced precision, then the caller's initializer
    (e.g. data every job shares)."""
    from wbcstudy.train import force_precision

    force_precision(forced)
    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def worker_pool(workers: int, initializer: Callable[..., None] | None = None, initargs: Sequence[Any] = ()):
    """A pool of ``workers`` spawned single-thread processes, or None for ``workers <= 1``.

    ``initializer(*initargs)`` runs once in each worker (module-level and picklable): hand it what every
    job reads — data sets, feature caches — so that they are sent once per worker, not once per job.
    Call ``shutdown()`` when done (one pool can serve several ``map_jobs``: each worker imports torch once).
    """
    if workers <= 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from wbcstudy.train import forced_precision

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(initializer, tuple(initargs), forced_precision()))


def map_jobs(fn: Callable, jobs: list, pool=None) -> list:
    """``[fn(job) for job in jobs]``, in the pool's processes when one is given (results in the jobs' order)."""
    if pool is None:
        return [fn(job) for job in jobs]
    return list(pool.map(fn, jobs))


def run_jobs(fn: Callable, jobs: list, workers: int = 1, initializer: Callable[..., None] | None = None,
             initargs: Sequence[Any] = ()) -> list:
    """``map_jobs`` in a pool of its own: ``min(workers, len(jobs))`` one-thread workers, shut down afterwards.

    With one worker (or one job) the jobs run here, one after another, after ``initializer(*initargs)`` has run
    here too — so a job reads the same shared state either way.
    """
    pool = worker_pool(min(workers, len(jobs)), initializer, initargs)
    if pool is None:
        if initializer is not None:
            initializer(*initargs)
        return map_jobs(fn, jobs)
    try:
        return map_jobs(fn, jobs, pool)
    finally:
        pool.shutdown()
