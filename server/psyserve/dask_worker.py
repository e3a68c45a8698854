"""Dask worker preload for psyserve's compute jobs: `dask worker tcp://HOST:8786 --nthreads 1 --preload psyserve.dask_worker`.

Owns the one-time set-up of a worker process (torch to one thread, torch/botorch/gpytorch and the
compute module imported before the first job), so no job pays an import. Touches nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

from .compute import worker_init

log = logging.getLogger(__name__)


def dask_setup(worker: Any) -> None:
    """Called by `dask worker --preload psyserve.dask_worker` once per worker process."""
    worker_init()
    log.info("psyserve compute ready on %s", getattr(worker, "address", "a Dask worker"))
