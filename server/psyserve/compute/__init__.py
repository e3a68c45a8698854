"""Public API of psyserve's compute side: the contract (picklable job specs/results, the registry) and
the job functions a pool worker runs. Importing this package stays torch-free (torch loads inside
jobs); it must not touch server state or I/O."""

from psyserve.compute.contract import (
    KNOWN_ACQFS,
    KNOWN_MODELS,
    GenerateJob,
    GenerateResult,
    GeneratorSpec,
    ModelSpec,
    ModelState,
    QueryJob,
    QueryJobResult,
    TrainingData,
    acqf_supports,
    canonical_acqf,
)
from psyserve.compute.jobs import fit_state, generate, query, worker_init

__all__ = [
    "KNOWN_ACQFS",
    "KNOWN_MODELS",
    "GenerateJob",
    "GenerateResult",
    "GeneratorSpec",
    "ModelSpec",
    "ModelState",
    "QueryJob",
    "QueryJobResult",
    "TrainingData",
    "acqf_supports",
    "canonical_acqf",
    "fit_state",
    "generate",
    "query",
    "worker_init",
]
