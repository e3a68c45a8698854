"""Ax-style optimisation experiments: the typed config, its INI form, and the constraint grammar.

Owns objectives, outcome and linear parameter constraints, tracking metrics and the generation
strategy (initialisation budget, method, parallelism) and how a typed config becomes INI text
(so both forms yield one ExperimentSpec through config.parse_config). Knows nothing of strategies'
runtime state, storage, compute or transports.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .params import ParameterSpec, ParamType, RawValue

OPTIMIZATION_MODEL = "ModelListGP"
SINGLE_OBJECTIVE_ACQF = "qLogNoisyExpectedImprovement"
MULTI_OBJECTIVE_ACQF = "qLogNoisyExpectedHypervolumeImprovement"
METHODS = ("fast", "random_search")
DEFAULT_RESTARTS = 20  # Ax 1.3's optimize_acqf defaults (cheap here: see compute.optimization_numerics)
DEFAULT_RAW_SAMPLES = 1024
VALUE_TYPES = ("float", "int", "str", "bool")
_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


class OptimizationConfigError(ValueError):
    """A typed or INI optimisation entry that cannot be honoured; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Objective:
    metric: str
    minimize: bool
    threshold: float | None = None


@dataclass(frozen=True)
class OutcomeConstraint:
    """`metric <= bound` (upper=True) or `metric >= bound`."""

    metric: str
    upper: bool
    bound: float

    @property
    def text(self) -> str:
        return f"{self.metric} {'<=' if self.upper else '>='} {self.bound!r}"

    def satisfied(self, value: float) -> bool:
        return value <= self.bound if self.upper else value >= self.bound


@dataclass(frozen=True)
class LinearConstraint:
    """sum(coefficients[name] * x[name]) <= bound, in raw units."""

    coefficients: tuple[tuple[str, float], ...]
    bound: float

    @property
    def text(self) -> str:
        terms = []
        for i, (name, c) in enumerate(self.coefficients):
            sign = "-" if c < 0 else ("+" if i else "")
            mag = abs(c)
            term = name if mag == 1 else f"{mag!r}*{name}"
            terms.append(f"{sign} {term}".strip() if i else f"{sign}{term}")
        return f"{' '.join(terms)} <= {self.bound!r}"

    def value(self, stimulus: Mapping[str, RawValue]) -> float:
        return sum(c * float(stimulus[n]) for n, c in self.coefficients)

    def satisfied(self, stimulus: Mapping[str, RawValue], tolerance: float = 1e-9) -> bool:
        return self.value(stimulus) <= self.bound + tolerance * max(1.0, abs(self.bound))


@dataclass(frozen=True)
class OptimizationSpec:
    objectives: tuple[Objective, ...]
    outcome_constraints: tuple[OutcomeConstraint, ...] = ()
    tracking_metrics: tuple[str, ...] = ()
    parameter_constraints: tuple[LinearConstraint, ...] = ()
    max_parallelism: int = 0

    @property
    def modelled_metrics(self) -> tuple[str, ...]:
        """Metrics with a GP each: objectives, then constrained metrics (each once)."""
        out: list[str] = []
        for name in [o.metric for o in self.objectives] + [c.metric for c in self.outcome_constraints]:
            if name not in out:
                out.append(name)
        return tuple(out)

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.modelled_metrics + tuple(m for m in self.tracking_metrics if m not in self.modelled_metrics)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def feasible(self, stimulus: Mapping[str, RawValue]) -> bool:
        return all(c.satisfied(stimulus) for c in self.parameter_constraints)


# ---------------------------------------------------------------------- constraint grammar
_TERM = re.compile(r"^\s*(?:(?P<coef>[0-9.eE+\-]+)\s*\*\s*)?(?P<name>[A-Za-z_][\w.\-]*)\s*$")


def _linear_side(text: str, where: str) -> dict[str, float]:
    """'x1 + 2*x2 - 0.5*x3' -> {x1: 1, x2: 2, x3: -0.5}; a bare number is kept under ''."""
    out: dict[str, float] = {}
    pieces = re.split(r"(?<![eE*])\s*([+\-])\s*", " " + text.strip())
    sign = 1.0
    for piece in pieces:
        if piece in ("+", "-"):
            sign = -sign if piece == "-" else sign
            continue
        if not piece.strip():
            continue
        try:
            number = float(piece)
        except ValueError:
            match = _TERM.match(piece)
            if match is None:
                raise OptimizationConfigError(where, f"{where}: cannot read the term {piece.strip()!r}") from None
            coef = float(match.group("coef")) if match.group("coef") else 1.0
            out[match.group("name")] = out.get(match.group("name"), 0.0) + sign * coef
        else:
            out[""] = out.get("", 0.0) + sign * number
        sign = 1.0
    return out


def parse_parameter_constraint(text: str, parameters: Mapping[str, ParameterSpec], where: str) -> LinearConstraint:
    """Ax's forms: 'x1 + 2*x2 <= 3', 'x1 >= x2' (order), '-x1 + x2 <= 0.5'."""
    match = re.match(r"^(.*?)(<=|>=)(.*)$", text)
    if match is None:
        raise OptimizationConfigError(where, f"{where}: expected a linear constraint like 'x1 + 2*x2 <= 3', got {text!r}")
    left, op, right = match.groups()
    lhs, rhs = _linear_side(left, where), _linear_side(right, where)
    coefficients: dict[str, float] = {}
    for name, c in lhs.items():
        coefficients[name] = coefficients.get(name, 0.0) + c
    for name, c in rhs.items():
        coefficients[name] = coefficients.get(name, 0.0) - c
    constant = coefficients.pop("", 0.0)
    if op == ">=":
        coefficients = {n: -c for n, c in coefficients.items()}
        constant = -constant
    coefficients = {n: c for n, c in coefficients.items() if c != 0.0}
    if not coefficients:
        raise OptimizationConfigError(where, f"{where}: the constraint {text!r} names no parameter")
    for name in coefficients:
        spec = parameters.get(name)
        if spec is None:
            raise OptimizationConfigError(where, f"{where}: unknown parameter {name!r} in {text!r} (known: {list(parameters)})")
        if spec.type not in (ParamType.CONTINUOUS, ParamType.INTEGER):
            raise OptimizationConfigError(where, f"{where}: parameter {name!r} is {spec.type.value}; constraints take range parameters only")
        if spec.log_scale:
            raise OptimizationConfigError(where, f"{where}: parameter {name!r} is on a log scale; linear constraints need linear parameters")
    constraint = LinearConstraint(tuple(coefficients.items()), -constant)
    lowest = sum(c * (parameters[n].lower if c > 0 else parameters[n].upper) for n, c in constraint.coefficients)
    if lowest > constraint.bound + 1e-12 * max(1.0, abs(constraint.bound)):
        raise OptimizationConfigError(where, f"{where}: no point within the parameter bounds satisfies {text!r}")
    return constraint


def parse_outcome_constraint(text: str, where: str) -> OutcomeConstraint:
    """'metric <= 3.5' or 'metric >= -1' (relative bounds like '5%' need a status quo: refused)."""
    match = re.match(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=)\s*(\S+)\s*$", text)
    if match is None:
        raise OptimizationConfigError(where, f"{where}: expected 'metric <= bound' or 'metric >= bound', got {text!r}")
    name, op, bound_text = match.groups()
    if bound_text.endswith("%"):
        raise OptimizationConfigError(where, f"{where}: relative outcome constraints ({text!r}) need a status quo arm, which psyserve does not support")
    try:
        bound = float(bound_text)
    except ValueError:
        raise OptimizationConfigError(where, f"{where}: the bound {bound_text!r} is not a number") from None
    if not math.isfinite(bound):
        raise OptimizationConfigError(where, f"{where}: the bound must be finite, got {bound_text!r}")
    return OutcomeConstraint(name, op == "<=", bound)


# ---------------------------------------------------------------------- typed config
@dataclass(frozen=True)
class TypedParameter:
    """One Ax-style parameter: kind 'range' (lower, upper, value_type, log_scale, digits), 'choice'
    (values, is_ordered) or 'fixed' (value)."""

    name: str
    kind: str
    lower: float = 0.0
    upper: float = 1.0
    value_type: str = ""
    log_scale: bool = False
    digits: int | None = None
    values: tuple[RawValue, ...] = ()
    is_ordered: bool = False
    value: RawValue | None = None


@dataclass(frozen=True)
class TypedObjective:
    metric: str
    minimize: bool = False
    threshold: float | None = None


@dataclass(frozen=True)
class TypedExperiment:
    """Ax's create_experiment arguments, typed."""

    parameters: tuple[TypedParameter, ...]
    objectives: tuple[TypedObjective, ...]
    parameter_constraints: tuple[str, ...] = ()
    outcome_constraints: tuple[str, ...] = ()
    tracking_metrics: tuple[str, ...] = ()
    method: str = "fast"
    initialization_trials: int | None = None
    seed: int | None = None
    max_parallelism: int = 0
    num_restarts: int = 0
    raw_samples: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)


def _ini_value(value: RawValue) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _check_name(name: str, where: str, what: str) -> None:
    if not _NAME.match(name or ""):
        raise OptimizationConfigError(where, f"{where}: {what} {name!r} must start with a letter or _ and hold only letters, digits, _ . -")


def _choice_type(values: Sequence[RawValue], declared: str, where: str) -> str:
    kinds = {type(v) for v in values}
    inferred = "bool" if kinds == {bool} else "int" if kinds == {int} else "float" if kinds <= {int, float} else "str" if kinds == {str} else ""
    if not inferred:
        raise OptimizationConfigError(where, f"{where}: choice values must all be of one type, got {sorted(k.__name__ for k in kinds)}")
    if declared and declared != inferred and not (declared == "float" and inferred == "int"):
        raise OptimizationConfigError(where, f"{where}: value_type {declared!r} does not match the values ({inferred})")
    return declared or inferred


def typed_to_ini(experiment: TypedExperiment) -> str:
    """The INI text equivalent to a typed experiment (what the journal stores and GetConfig shows).

    Checks what only the typed form can get wrong (field names); everything else is checked once,
    by config.parse_config, for both forms.
    """
    if not experiment.parameters:
        raise OptimizationConfigError("experiment.parameters", "experiment.parameters: at least one parameter is required")
    if not experiment.objectives:
        raise OptimizationConfigError("experiment.optimization.objectives", "experiment.optimization.objectives: at least one objective is required")
    lines = ["[common]"]
    names = []
    sections: list[str] = []
    free = 0
    for i, p in enumerate(experiment.parameters):
        where = f"experiment.parameters[{i}]"
        _check_name(p.name, f"{where}.name", "parameter name")
        names.append(p.name)
        body = [f"[{p.name}]"]
        if p.kind == "range":
            free += 1
            vt = p.value_type or "float"
            if vt not in ("float", "int"):
                raise OptimizationConfigError(f"{where}.range.value_type", f"{where}.range.value_type: a range parameter is float or int, got {vt!r}")
            for key, number in (("lower", p.lower), ("upper", p.upper)):
                if not math.isfinite(number):
                    raise OptimizationConfigError(f"{where}.range.{key}", f"{where}.range.{key}: must be finite, got {number!r}")
            body += [
                f"par_type = {'integer' if vt == 'int' else 'continuous'}",
                f"lower_bound = {p.lower!r}",
                f"upper_bound = {p.upper!r}",
                f"log_scale = {p.log_scale}",
            ]
            if p.digits is not None:
                body.append(f"digits = {p.digits}")
        elif p.kind == "choice":
            free += 1
            if not p.values:
                raise OptimizationConfigError(f"{where}.choice.values", f"{where}.choice.values: a choice parameter needs values")
            vt = _choice_type(p.values, p.value_type, f"{where}.choice.values")
            if vt == "bool":
                if sorted(p.values) != [False, True]:
                    raise OptimizationConfigError(f"{where}.choice.values", f"{where}.choice.values: a bool choice takes [False, True]")
                body.append("par_type = binary")
            else:
                for v in p.values:
                    if vt == "str" and ("," in str(v) or "]" in str(v) or "[" in str(v)):
                        raise OptimizationConfigError(f"{where}.choice.values", f"{where}.choice.values: {v!r} holds , [ or ]")
                body += [
                    "par_type = categorical",
                    f"choices = [{', '.join(_ini_value(float(v) if vt == 'float' else v) for v in p.values)}]",
                    f"value_type = {vt}",
                    f"is_ordered = {p.is_ordered}",
                ]
        elif p.kind == "fixed":
            if p.value is None:
                raise OptimizationConfigError(f"{where}.fixed.value", f"{where}.fixed.value: a fixed parameter needs a value")
            vt = {bool: "bool", int: "int", float: "float", str: "str"}[type(p.value)]
            body += ["par_type = fixed", f"value = {_ini_value(p.value)}", f"value_type = {vt}"]
        else:
            raise OptimizationConfigError(f"{where}.kind", f"{where}: give one of range, choice and fixed")
        sections.append("\n".join(body))
    for i, o in enumerate(experiment.objectives):
        _check_name(o.metric, f"experiment.optimization.objectives[{i}].metric", "metric name")
    for i, m in enumerate(experiment.tracking_metrics):
        _check_name(m, f"experiment.optimization.tracking_metrics[{i}]", "metric name")
    for key, texts in (("parameter_constraints", experiment.parameter_constraints), ("outcome_constraints", experiment.outcome_constraints)):
        for i, text in enumerate(texts):
            if any(ch in text for ch in ",[]\n"):
                raise OptimizationConfigError(f"experiment.optimization.{key}[{i}]", f"experiment.optimization.{key}[{i}]: {text!r} holds , [ ] or a line break")
    if experiment.method not in METHODS:
        raise OptimizationConfigError("experiment.optimization.generation_strategy.method", f"generation_strategy.method must be one of {list(METHODS)}")
    init = experiment.initialization_trials
    if init is None:
        init = max(5, 2 * free)
    if init < 0:
        raise OptimizationConfigError(
            "experiment.optimization.generation_strategy.initialization_trials", "generation_strategy.initialization_trials must be >= 0"
        )
    if experiment.max_parallelism < 0:
        raise OptimizationConfigError("experiment.optimization.generation_strategy.max_parallelism", "generation_strategy.max_parallelism must be >= 0")
    phases = ["sobol"] if experiment.method == "random_search" or init > 0 else []
    if experiment.method == "fast":
        phases.append("botorch")
    lines.append(f"parnames = [{', '.join(names)}]")
    lines.append(f"strategy_names = [{', '.join(phases)}]")
    if experiment.seed is not None:
        lines.append(f"seed = {int(experiment.seed)}")
    lines.append("")
    lines += sections_join(sections)
    opt = ["[optimization]", f"objectives = [{', '.join(o.metric for o in experiment.objectives)}]"]
    opt.append(f"minimize = [{', '.join(str(bool(o.minimize)) for o in experiment.objectives)}]")
    if any(o.threshold is not None for o in experiment.objectives):
        opt.append(f"objective_thresholds = [{', '.join('none' if o.threshold is None else repr(float(o.threshold)) for o in experiment.objectives)}]")
    if experiment.outcome_constraints:
        opt.append(f"outcome_constraints = [{', '.join(experiment.outcome_constraints)}]")
    if experiment.tracking_metrics:
        opt.append(f"tracking_metrics = [{', '.join(experiment.tracking_metrics)}]")
    if experiment.parameter_constraints:
        opt.append(f"parameter_constraints = [{', '.join(experiment.parameter_constraints)}]")
    if experiment.max_parallelism:
        opt.append(f"max_parallelism = {experiment.max_parallelism}")
    lines += [*opt, ""]
    if "sobol" in phases:
        sobol = ["[sobol]", "generator = SobolGenerator"]
        if experiment.method == "fast":
            sobol += [f"min_asks = {init}", f"max_asks = {init}"]
        lines += [*sobol, ""]
    if "botorch" in phases:
        acqf = MULTI_OBJECTIVE_ACQF if len(experiment.objectives) > 1 else SINGLE_OBJECTIVE_ACQF
        lines += ["[botorch]", "generator = OptimizeAcqfGenerator", f"model = {OPTIMIZATION_MODEL}", f"acqf = {acqf}"]
        lines.append(f"restarts = {experiment.num_restarts or DEFAULT_RESTARTS}")
        lines.append(f"samps = {experiment.raw_samples or DEFAULT_RAW_SAMPLES}")
        lines.append("")
    if experiment.metadata:
        lines.append("[metadata]")
        lines += [f"{k} = {v}" for k, v in experiment.metadata.items()]
    return "\n".join(lines) + "\n"


def sections_join(sections: list[str]) -> list[str]:
    out: list[str] = []
    for s in sections:
        out += [s, ""]
    return out
