"""The layering of ../shared/DESIGN.md, checked on the import graph of server/psyserve.

Every import counts, module-level or inside a function (a function-level import hides a cycle
from Python, not from this test). Also: the torch-free modules stay torch-free when imported, and
no server file passes ~500 lines without saying why at its top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "server" / "psyserve"

# DESIGN.md: cli/app -> transports/*, modeling, export -> service -> strategy -> config, params,
# journal, errors -> compute/contract. Lower numbers sit higher; an import may point to the same
# level or further down, never up.
LEVELS: dict[str, int] = {
    "psyserve.__main__": 0,
    "psyserve.cli": 0,
    "psyserve.app": 1,
    "psyserve.transports": 2,
    "psyserve.modeling": 2,
    "psyserve.modeling_optimization": 2,  # the model engine's optimisation jobs
    "psyserve.dask_pool": 2,  # the model engine's other executor
    "psyserve.dask_worker": 2,  # a Dask worker's preload: runs compute jobs
    "psyserve.export": 2,
    "psyserve.plots": 2,  # plot data and predictions from the service (CLI plot, dashboard)
    "psyserve.observability": 2,  # metrics, the request-observing gRPC interceptor, JSON logs
    "psyserve.dashboard": 2,  # the dashboard's ASGI app: reads the service like a transport
    "psyserve.auth": 2,
    "psyserve.service": 3,
    "psyserve.strategy": 4,
    "psyserve.sweep": 4,  # a strategy kind
    "psyserve.config": 5,
    "psyserve.optimization_spec": 5,  # Ax-style typed configs and the [optimization] grammar
    "psyserve.params": 5,
    "psyserve.quasirandom": 5,  # torch's Sobol sequence in numpy (SobolGenerator phases); torch-free
    "psyserve.journal": 5,
    "psyserve.residency": 5,  # which strategies stay in memory (policy, counters, the summaries' JSON codec)
    "psyserve.errors": 5,
    "psyserve.aepsych_names": 5,
    "psyserve": 6,  # the package's own __init__ (a docstring and a version)
    "psyserve.compute": 6,
}
# transports import the service, its errors and the value types of params (and each other); nothing below
TRANSPORT_MAY_IMPORT = {"psyserve.service", "psyserve.errors", "psyserve.params"}
# the server may use the client distribution's public wire conversions and generated code
# and its plotting module (one implementation of every plot for Client.plot, `psyserve plot` and the dashboard)
CLIENT_MAY_IMPORT = ("psyserve_client.wire", "psyserve_client._proto", "psyserve_client.plot")
TORCH = ("torch", "botorch", "gpytorch", "linear_operator")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            for alias in node.names:  # `from . import x` / `from .compute import contract`
                candidate = f"{target}.{alias.name}"
                if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                ).exists():
                    out.add(candidate)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def level(module: str) -> int:
    """A module's level; the package `psyserve` itself matches only exactly, so a new module must be
    given its place here (by DESIGN.md) before this test passes."""
    found = [k for k in LEVELS if module == k or (k != "psyserve" and module.startswith(k + "."))]
    if not found:
        raise AssertionError(f"{module} has no layer: add it to LEVELS in tests/test_layering.py (see DESIGN.md)")
    return LEVELS[max(found, key=len)]


def test_imports_point_down() -> None:
    wrong = []
    for source, targets in graph().items():
        for target in sorted(targets):
            if target.startswith("psyserve_client"):
                if not target.startswith(CLIENT_MAY_IMPORT):
                    wrong.append(f"{source} -> {target} (only psyserve_client.wire, _proto and plot)")
                continue
            if not target.startswith("psyserve") or target == source:
                continue
            if source.startswith("psyserve.transports") and target.startswith("psyserve.transports"):
                continue  # a transport may reuse another's conversions (HTTP/Connect uses the gRPC servicer's)
            if source.startswith("psyserve.transports.") and target not in TRANSPORT_MAY_IMPORT:
                wrong.append(f"{source} -> {target} (transports import service, errors, params only)")
            elif source.startswith("psyserve.compute"):
                if not target.startswith("psyserve.compute"):
                    wrong.append(f"{source} -> {target} (compute imports only compute modules and libraries)")
            elif level(target) < level(source):
                wrong.append(f"{source} -> {target} (upward: level {level(source)} -> {level(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = {s: {t for t in ts if t.startswith("psyserve.") and t != s} for s, ts in graph().items()}
    # a package's __init__ re-exporting its submodules is not a cycle of the code
    for source in list(edges):
        edges[source] = {t for t in edges[source] if not (source.startswith(t + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt in edges and not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node)


def test_compute_contract_is_torch_free() -> None:
    contract = graph()["psyserve.compute.contract"]
    assert not [t for t in contract if t.startswith(TORCH)]
    assert not [t for t in contract if t.startswith("psyserve") and t != "psyserve.compute"]


def test_server_process_imports_no_torch() -> None:
    """The event loop's modules (the model engine included) load without torch: a restart stays fast."""
    code = (
        "import sys, psyserve.app, psyserve.modeling, psyserve.service, psyserve.config, psyserve.compute.contract;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'botorch', 'gpytorch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == "[]"


def test_long_files_say_why() -> None:
    long = []
    for path in sorted((ROOT / "server").rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > 550:
            doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
            if "longer than ~500 lines" not in doc.lower():
                long.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
    assert not long, "files over ~500 lines without a reason at their top:\n" + "\n".join(long)
