"""Public API of psyserve's compute side: picklable job specs/results, the pure job functions and the registry.
Importing this package stays torch-free (torch loads inside jobs); it must not touch server state or I/O."""

from psyserve.compute.jobs import (
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
    fit_state,
    generate,
    query,
    worker_init,
)

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
