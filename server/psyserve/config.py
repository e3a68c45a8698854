"""AEPsych-style INI experiment configs -> a validated, immutable ExperimentSpec.

Owns the config grammar, defaults and the unused-key warnings; knows nothing of strategies'
runtime state, storage or transports.

Longer than ~500 lines on purpose: it is one grammar (AEPsych's INI) whose sections, fallbacks,
defaults and refusals are read together; the catalogue of names it refuses is aepsych_names.py.
"""

from __future__ import annotations

import ast
import configparser
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from . import aepsych_names as aepsych
from .compute.contract import (
    DEFAULT_N_LEVELS,
    INDEPENDENT,
    INDEPENDENT_PARTS,
    INDUCING_ALLOCATORS,
    INDUCING_MAIN_ALLOCATORS,
    KNOWN_ACQFS,
    KNOWN_MODELS,
    LOOKAHEAD_ACQFS,
    OBJECTIVE_LINKS,
    ORDINAL,
    SEMIP_MODELS,
    VARIATIONAL,
    VARIATIONAL_LIKELIHOODS,
    acqf_supports,
    model_family,
)
from .optimization_spec import (
    MULTI_OBJECTIVE_ACQF,
    OPTIMIZATION_MODEL,
    SINGLE_OBJECTIVE_ACQF,
    Objective,
    OptimizationConfigError,
    OptimizationSpec,
    parse_outcome_constraint,
    parse_parameter_constraint,
)
from .params import ParameterSpace, ParameterSpec, ParamType, RawValue

MODELS = KNOWN_MODELS  # the compute side's registry (torch-free import)
ORDINAL_MODEL = ORDINAL
#: the most levels an ordinal outcome may have (a Likert scale; every level is a speculation branch)
MAX_LEVELS = 100
ACQFS = KNOWN_ACQFS

MAX_CONFIG_BYTES = 256 * 1024
MAX_PARAMETERS = 64
MAX_PHASES = 32
MAX_MANUAL_POINTS = 100_000

#: Generators that fit the phase's model and pick points with its acquisition function, -> the
#: compute-side ``method`` (compute/optimize.py): optimise it, epsilon-greedy around the optimiser,
#: the best of a Sobol grid, or a grid point drawn with probability proportional to its value.
MODEL_GENERATORS: dict[str, str] = {
    "OptimizeAcqfGenerator": "optimize",
    "EpsilonGreedyGenerator": "epsilon_greedy",
    "AcqfGridSearchGenerator": "grid",
    "AcqfThompsonSamplerGenerator": "thompson",
    "IndependentOptimizeAcqfGenerator": "independent",
    "MixedOptimizeAcqfGenerator": "mixed",
    "IntensityAwareSemiPGenerator": "semip_intensity",
}
INDEPENDENT_GENERATOR = "IndependentOptimizeAcqfGenerator"
MIXED_GENERATOR = "MixedOptimizeAcqfGenerator"
#: the most discrete combinations MixedOptimizeAcqfGenerator optimises over (one L-BFGS multistart each)
MAX_MIXED_COMBINATIONS = 64
INDEPENDENT_MODEL = INDEPENDENT
GENERATORS = frozenset(
    {"SobolGenerator", "RandomGenerator", "ManualGenerator", "SampleAroundPointsGenerator", *MODEL_GENERATORS}
)
OUTCOME_TYPES = ("binary", "continuous", "ordinal")


class ConfigError(ValueError):
    """A config that cannot be honoured; `section` and `key` name the offending entry."""

    def __init__(self, section: str, key: str | None, message: str) -> None:
        where = f"[{section}] {key}" if key else f"[{section}]"
        super().__init__(f"config {where}: {message}")
        self.section = section
        self.key = key

    @property
    def field(self) -> str:
        return f"config_ini[{self.section}]" + (f".{self.key}" if self.key else "")


@dataclass(frozen=True)
class PartSpec:
    """One outcome's model and generator in an IndependentGPsModel phase (outcome i = part i)."""

    section: str  # the model's name in `models` (a class, or an alias section with `class`)
    model: str
    acqf: str
    model_options: Mapping[str, float | int | str] = field(default_factory=dict)
    generator_options: Mapping[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class PhaseSpec:
    """One strategy of the sequence (AEPsych's `strategy_names` entries)."""

    name: str
    generator: str
    model: str | None = None
    acqf: str | None = None
    min_asks: int | None = None
    max_asks: int | None = None
    min_total_tells: int | None = None
    min_total_outcome_occurrences: int = 0
    refit_every: int = 1
    seed: int = 0
    run_indefinitely: bool = False
    manual_points: tuple[tuple[Any, ...], ...] = ()
    shuffle: bool = False
    model_options: Mapping[str, float | int | str] = field(default_factory=dict)
    generator_options: Mapping[str, float | int | str] = field(default_factory=dict)
    # IndependentGPsModel: one model and generator per outcome, in outcome order
    parts: tuple[PartSpec, ...] = ()

    @property
    def is_model_based(self) -> bool:
        return self.generator in MODEL_GENERATORS

    @property
    def has_stopping_rule(self) -> bool:
        """Whether the phase can finish before max_asks (otherwise it runs to max_asks or a finish request)."""
        return self.min_asks is not None or self.min_total_tells is not None


@dataclass(frozen=True)
class ExperimentSpec:
    space: ParameterSpace
    phases: tuple[PhaseSpec, ...]
    stimuli_per_trial: int
    outcome_types: tuple[str, ...]
    outcome_names: tuple[str, ...]
    metadata: Mapping[str, str]
    sections: Mapping[str, Mapping[str, str]]
    seed: int | None
    warnings: tuple[str, ...]
    # Ax-style objectives, constraints and tracking metrics ([optimization]); None for other experiments
    optimization: OptimizationSpec | None = None
    #: ordinal outcomes: the number of levels (a told level must lie in 0..n_levels-1); None otherwise
    n_levels: int | None = None

    @property
    def binary_outcome(self) -> bool:
        return self.outcome_types[0] == "binary"


class _Reader:
    """configparser access that records which keys were read, for unused-key warnings."""

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.parser = parser
        self.used: set[tuple[str, str]] = set()

    def value(self, section: str, key: str) -> str:
        """The value with ``${section:key}`` references resolved (AEPsych's ExtendedInterpolation);
        a key given without a value reads as ""."""
        try:
            text = self.parser.get(section, key)
        except configparser.InterpolationError as exc:
            raise ConfigError(section, key, f"bad ${{...}} reference: {str(exc).splitlines()[0]}") from None
        return "" if text is None else text

    def has(self, section: str, key: str) -> bool:
        return self.parser.has_section(section) and self.parser.has_option(section, key)

    def raw(self, section: str, key: str, *fallback_sections: str) -> tuple[str, str] | None:
        """Return (section found in, value) looking in section, then fallbacks, then [common]."""
        for s in (section, *fallback_sections, "common"):
            if self.has(s, key):
                self.used.add((s, key))
                return s, self.value(s, key)
        return None

    def get_str(self, section: str, key: str, *fallback: str, default: str | None = None) -> str | None:
        found = self.raw(section, key, *fallback)
        return found[1].strip() if found else default

    def get_int(self, section: str, key: str, *fallback: str, minimum: int = 0) -> int | None:
        found = self.raw(section, key, *fallback)
        if found is None:
            return None
        try:
            number = float(found[1])
        except ValueError:
            raise ConfigError(found[0], key, f"expected an integer, got {found[1]!r}") from None
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(found[0], key, f"expected an integer, got {found[1]!r}")
        if number < minimum:
            raise ConfigError(found[0], key, f"must be at least {minimum}, got {found[1]!r}")
        return int(number)

    def get_float(self, section: str, key: str, *fallback: str) -> float | None:
        found = self.raw(section, key, *fallback)
        if found is None:
            return None
        try:
            number = float(found[1])
        except ValueError:
            raise ConfigError(found[0], key, f"expected a number, got {found[1]!r}") from None
        if not math.isfinite(number):
            raise ConfigError(found[0], key, f"expected a finite number, got {found[1]!r}")
        return number

    def get_bool(self, section: str, key: str, *fallback: str, default: bool = False) -> bool:
        found = self.raw(section, key, *fallback)
        if found is None:
            return default
        value = found[1].strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(found[0], key, f"expected True or False, got {found[1]!r}")

    def get_list(self, section: str, key: str, *fallback: str) -> list[str] | None:
        found = self.raw(section, key, *fallback)
        return None if found is None else parse_list(found[1])


def strip_inline_comments(text: str) -> str:
    """Remove AEPsych-style inline comments: ``key = 0  # a note`` -> ``key = 0``.

    AEPsych's parser treats ``#`` after whitespace as the start of a comment (configparser's
    ``inline_comment_prefixes``). Unlike configparser, a ``#`` inside a quoted string is kept.
    Whole-line comments (``#`` or ``;`` first) are dropped, so that one may also stand between
    the lines of a list written over several lines (where configparser would end the value).
    """
    out = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped[:1] in ("#", ";"):
            continue
        if not stripped:
            out.append(line)
            continue
        quote = ""
        cut = len(line)
        for i, ch in enumerate(line):
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "'\"" and (i == 0 or line[i - 1].isspace() or line[i - 1] in "=:[,("):
                quote = ch  # an opening quote starts a value or list item; "Bob's" has none
            elif ch == "#" and i > 0 and line[i - 1].isspace():
                cut = i
                break
        out.append(line[:cut].rstrip() if cut < len(line) else line)
    return "\n".join(out)


def parse_list(text: str) -> list[str]:
    """`[a, b, c]` (brackets optional) -> ["a", "b", "c"]."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [item.strip().strip("'\"") for item in text.split(",") if item.strip()]


def _number(section: str, key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(section, key, f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(section, key, f"expected a finite number, got {text!r}")
    return value


def parse_config(text: str, default_seed: int | None = None) -> ExperimentSpec:
    """Parse and validate an AEPsych INI config; raise ConfigError naming the section and key.

    `default_seed` seeds the generators when the config sets no `seed` (the server draws one and
    journals it, so that a replay reproduces the same asks).
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError("common", None, f"config is larger than {MAX_CONFIG_BYTES} bytes")
    # AEPsych's parser settings (inline "#" comments, ${section:key} references, a blank line ends a
    # value, keys without values), except that [common] is read through explicit fallbacks rather
    # than as configparser's default section, so that unused-key warnings stay per section.
    parser = configparser.ConfigParser(
        default_section="\x00none",
        interpolation=configparser.ExtendedInterpolation(),
        strict=True,
        empty_lines_in_values=False,
        allow_no_value=True,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(strip_inline_comments(text))
    except configparser.Error as exc:
        message = str(exc).splitlines()[0]
        raise ConfigError("common", None, f"malformed INI: {message}") from None
    if not parser.has_section("common"):
        raise ConfigError("common", None, "missing [common] section")
    r = _Reader(parser)
    warnings: list[str] = []

    parnames = r.get_list("common", "parnames")
    if not parnames:
        raise ConfigError("common", "parnames", "missing or empty parameter list")
    if len(parnames) > MAX_PARAMETERS:
        raise ConfigError("common", "parnames", f"at most {MAX_PARAMETERS} parameters")
    if len(set(parnames)) != len(parnames):
        raise ConfigError("common", "parnames", "parameter names must be unique")
    legacy_lb = r.get_list("common", "lb")
    legacy_ub = r.get_list("common", "ub")
    for key, values in (("lb", legacy_lb), ("ub", legacy_ub)):
        if values is not None and len(values) != len(parnames):
            raise ConfigError("common", key, f"has {len(values)} entries for {len(parnames)} parameters")

    parameters = [_parse_parameter(r, name, i, legacy_lb, legacy_ub) for i, name in enumerate(parnames)]
    space = ParameterSpace(tuple(parameters))
    if space.dim == 0:
        raise ConfigError("common", "parnames", "every parameter is fixed: nothing to choose")

    stimuli_per_trial = r.get_int("common", "stimuli_per_trial", minimum=1) or 1
    if stimuli_per_trial not in (1, 2):
        raise ConfigError("common", "stimuli_per_trial", f"must be 1 or 2, got {stimuli_per_trial}")
    optimization = _parse_optimization(r, {p.name: p for p in parameters}) if parser.has_section("optimization") else None
    default_types = ["continuous"] * len(optimization.metrics) if optimization is not None else ["binary"]
    outcome_types = tuple(t.lower() for t in (r.get_list("common", "outcome_types") or default_types))
    if not outcome_types:
        outcome_types = ("binary",)
    for t in outcome_types:
        if t not in OUTCOME_TYPES:
            raise ConfigError("common", "outcome_types", f"unknown outcome type {t!r} (known: {list(OUTCOME_TYPES)})")
    outcome_names = tuple(r.get_list("common", "outcome_names") or (optimization.metrics if optimization is not None else []))
    if outcome_names and len(outcome_names) != len(outcome_types):
        raise ConfigError("common", "outcome_names", f"has {len(outcome_names)} names for {len(outcome_types)} outcome types")
    if not outcome_names:
        outcome_names = ("outcome",) if len(outcome_types) == 1 else tuple(f"outcome_{i}" for i in range(len(outcome_types)))
    if len(set(outcome_names)) != len(outcome_names):
        raise ConfigError("common", "outcome_names", "outcome names must be unique")
    if optimization is not None:
        for metric in optimization.metrics:
            if metric not in outcome_names:
                raise ConfigError("optimization", None, f"metric {metric!r} is not one of [common] outcome_names {list(outcome_names)}")
        for metric, kind in zip(outcome_names, outcome_types, strict=True):
            if metric in optimization.metrics and kind != "continuous":
                raise ConfigError("common", "outcome_types", f"optimisation metric {metric!r} must be continuous, not {kind}")
        if stimuli_per_trial != 1:
            raise ConfigError("common", "stimuli_per_trial", "optimisation experiments take one stimulus per trial")

    seed = r.get_int("common", "seed")
    if seed is None:
        seed = default_seed
    strategy_names = r.get_list("common", "strategy_names")
    if not strategy_names:
        raise ConfigError("common", "strategy_names", "missing or empty strategy list")
    if len(strategy_names) > MAX_PHASES:
        raise ConfigError("common", "strategy_names", f"at most {MAX_PHASES} strategies")
    phases = []
    for index, name in enumerate(strategy_names):
        if not parser.has_section(name):
            raise ConfigError(name, None, f"strategy {name!r} is listed in [common] strategy_names but has no section")
        phases.append(_parse_phase(r, name, index, space, stimuli_per_trial, outcome_types, seed, optimization))
    if len(set(strategy_names)) != len(strategy_names):
        raise ConfigError("common", "strategy_names", "strategy names must be unique")
    n_levels = _experiment_levels(r, phases, outcome_types)

    metadata: dict[str, str] = {}
    if parser.has_section("metadata"):
        for key in parser.options("metadata"):
            r.used.add(("metadata", key))
            metadata[key] = r.value("metadata", key)
    r.used.add(("common", "target"))  # read by acquisition sections through the fallback

    sections = {s: {k: r.value(s, k) for k in parser.options(s)} for s in parser.sections()}
    for section, entries in sections.items():
        for key in entries:
            if (section, key) not in r.used:
                warnings.append(f"[{section}] {key} is not used by psyserve")
    return ExperimentSpec(
        space=space,
        phases=tuple(phases),
        stimuli_per_trial=stimuli_per_trial,
        outcome_types=outcome_types,
        outcome_names=outcome_names,
        metadata=metadata,
        sections=sections,
        seed=seed,
        warnings=tuple(warnings),
        optimization=optimization,
        n_levels=n_levels,
    )


def _experiment_levels(r: _Reader, phases: list[PhaseSpec], outcome_types: tuple[str, ...]) -> int | None:
    """The ordinal outcome's number of levels: every OrdinalGPModel phase must agree; without one, the
    [OrdinalLikelihood] section's n_levels, if any (tells are then checked against it)."""
    if "ordinal" not in outcome_types:
        return None
    levels = None
    for phase in phases:
        for where, model, options in [(phase.name, phase.model, phase.model_options)] + [(p.section, p.model, p.model_options) for p in phase.parts]:
            if model is not None and model_family(model, options) == ORDINAL_MODEL:
                k = int(options["n_levels"])
                if levels is not None and k != levels:
                    raise ConfigError(where, "n_levels", f"every ordinal model must have the same n_levels ({levels}), got {k}")
                levels = k
    if levels is None:
        levels = r.get_int("OrdinalLikelihood", "n_levels", minimum=2)
    return levels


def _parse_optimization(r: _Reader, parameters: Mapping[str, ParameterSpec]) -> OptimizationSpec:
    """[optimization]: objectives, minimize, objective_thresholds, outcome_constraints,
    tracking_metrics, parameter_constraints, max_parallelism."""
    section = "optimization"

    def listed(key: str) -> list[str]:
        found = r.raw(section, key) if r.has(section, key) else None
        return [] if found is None else parse_list(found[1])

    names = listed("objectives")
    if not names:
        raise ConfigError(section, "objectives", "at least one objective metric is required")
    if len(set(names)) != len(names):
        raise ConfigError(section, "objectives", "objective metrics must be unique")
    minimize_text = listed("minimize") or ["False"] * len(names)
    thresholds_text = listed("objective_thresholds") or ["none"] * len(names)
    for key, values in (("minimize", minimize_text), ("objective_thresholds", thresholds_text)):
        if len(values) != len(names):
            raise ConfigError(section, key, f"has {len(values)} entries for {len(names)} objectives")
    objectives = []
    for name, m, t in zip(names, minimize_text, thresholds_text, strict=True):
        if m.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(section, "minimize", f"expected True or False, got {m!r}")
        threshold = None if t.lower() in ("none", "") else _number(section, "objective_thresholds", t)
        objectives.append(Objective(name, m.lower() in ("true", "1"), threshold))
    try:
        outcome_constraints = tuple(
            parse_outcome_constraint(text, f"config_ini[optimization].outcome_constraints[{i}]") for i, text in enumerate(listed("outcome_constraints"))
        )
        parameter_constraints = tuple(
            parse_parameter_constraint(text, parameters, f"config_ini[optimization].parameter_constraints[{i}]")
            for i, text in enumerate(listed("parameter_constraints"))
        )
    except OptimizationConfigError as exc:
        key = "outcome_constraints" if "outcome_constraints" in exc.field else "parameter_constraints"
        raise ConfigError(section, key, str(exc).split(": ", 1)[-1]) from None
    for c in outcome_constraints:
        if c.metric in names and len(names) == 1:
            raise ConfigError(section, "outcome_constraints", f"metric {c.metric!r} is the objective; constrain another metric")
    tracking = tuple(listed("tracking_metrics"))
    modelled = set(names) | {c.metric for c in outcome_constraints}
    for m in tracking:
        if m in modelled:
            raise ConfigError(section, "tracking_metrics", f"metric {m!r} is already an objective or constrained")
    max_parallelism = r.get_int(section, "max_parallelism") or 0
    return OptimizationSpec(
        objectives=tuple(objectives),
        outcome_constraints=outcome_constraints,
        tracking_metrics=tracking,
        parameter_constraints=parameter_constraints,
        max_parallelism=max_parallelism,
    )


def _parse_parameter(
    r: _Reader, name: str, index: int, legacy_lb: list[str] | None, legacy_ub: list[str] | None
) -> ParameterSpec:
    section = name
    type_text = (
        r.get_str(section, "par_type") if r.parser.has_section(section) and r.has(section, "par_type") else None
    ) or "continuous"
    try:
        ptype = ParamType(type_text.lower())
    except ValueError:
        raise ConfigError(
            section, "par_type", f"unknown parameter type {type_text!r} (known: {[t.value for t in ParamType]})"
        ) from None
    if ptype is ParamType.FIXED:
        found = r.raw(section, "value") if r.has(section, "value") else None
        if found is None:
            raise ConfigError(section, "value", "a fixed parameter needs a value")
        text = found[1].strip()
        fixed: RawValue
        value_type = _value_type(r, section, ("float", "int", "str", "bool"))
        try:
            fixed = float(text)
        except ValueError:
            fixed = text.strip("'\"")
        if value_type:
            fixed = _typed(section, "value", text.strip("'\""), value_type)
        return ParameterSpec(name=name, type=ptype, value=fixed, value_type=value_type)
    if ptype is ParamType.CATEGORICAL:
        choices = r.get_list(section, "choices") if r.has(section, "choices") else None
        if not choices:
            raise ConfigError(section, "choices", "a categorical parameter needs a non-empty choices list")
        if len(set(choices)) != len(choices):
            raise ConfigError(section, "choices", "choices must be unique")
        value_type = _value_type(r, section, ("float", "int", "str"))
        if value_type in ("float", "int"):
            choices = [str(_typed(section, "choices", c, value_type)) for c in choices]
            if len(set(choices)) != len(choices):
                raise ConfigError(section, "choices", "choices must be unique")
        is_ordered = r.get_bool(section, "is_ordered", default=True) if r.has(section, "is_ordered") else True
        return ParameterSpec(
            name=name, type=ptype, choices=tuple(choices), lower=0, upper=len(choices) - 1, value_type=value_type, is_ordered=is_ordered
        )
    if ptype is ParamType.BINARY:
        return ParameterSpec(name=name, type=ptype, lower=0, upper=1)
    lower_text = r.get_str(section, "lower_bound") if r.has(section, "lower_bound") else None
    upper_text = r.get_str(section, "upper_bound") if r.has(section, "upper_bound") else None
    lower_where, upper_where = (section, "lower_bound"), (section, "upper_bound")
    if lower_text is None and legacy_lb is not None:
        lower_text, lower_where = legacy_lb[index], ("common", "lb")
    if upper_text is None and legacy_ub is not None:
        upper_text, upper_where = legacy_ub[index], ("common", "ub")
    if lower_text is None:
        raise ConfigError(section, "lower_bound", f"parameter {name!r} has no lower bound")
    if upper_text is None:
        raise ConfigError(section, "upper_bound", f"parameter {name!r} has no upper bound")
    lower = _number(*lower_where, lower_text)
    upper = _number(*upper_where, upper_text)
    if lower >= upper:
        raise ConfigError(
            upper_where[0], upper_where[1], f"parameter {name!r}: lower bound {lower:g} must be below upper bound {upper:g}"
        )
    log_scale = r.get_bool(section, "log_scale") if r.has(section, "log_scale") else False
    if log_scale and lower <= 0:
        raise ConfigError(section, "log_scale", f"parameter {name!r}: log scale needs a positive lower bound, got {lower:g}")
    if ptype is ParamType.INTEGER and math.floor(upper) < math.ceil(lower):
        raise ConfigError(section, "upper_bound", f"parameter {name!r}: no integer lies in [{lower:g}, {upper:g}]")
    digits = r.get_int(section, "digits") if r.has(section, "digits") else None
    if digits is not None and ptype is not ParamType.CONTINUOUS:
        raise ConfigError(section, "digits", f"parameter {name!r}: digits applies to continuous parameters only")
    return ParameterSpec(name=name, type=ptype, lower=lower, upper=upper, log_scale=log_scale, digits=digits)


def _value_type(r: _Reader, section: str, allowed: tuple[str, ...]) -> str:
    text = (r.get_str(section, "value_type") or "") if r.has(section, "value_type") else ""
    if text and text not in allowed:
        raise ConfigError(section, "value_type", f"expected one of {list(allowed)}, got {text!r}")
    return text


def _typed(section: str, key: str, text: str, value_type: str) -> RawValue:
    """A config value as value_type ('float', 'int', 'str', 'bool')."""
    if value_type == "str":
        return text
    if value_type == "bool":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(section, key, f"expected True or False, got {text!r}")
        return text.lower() in ("true", "1")
    number = _number(section, key, text)
    if value_type == "int":
        if number != int(number):
            raise ConfigError(section, key, f"expected an integer, got {text!r}")
        return int(number)
    return number


def _options(
    r: _Reader, class_section: str, keys: Mapping[str, type | tuple[str, ...]], phase: str
) -> dict[str, float | int | str]:
    """Read class options from [phase] then [ClassName] then [common]; a tuple kind lists the allowed words."""
    out: dict[str, float | int | str] = {}
    for key, kind in keys.items():
        value: float | int | str | None
        if isinstance(kind, tuple):
            found = r.raw(phase, key, class_section)
            value = None if found is None else found[1].strip().lower()
            if found is not None and value not in kind:
                raise ConfigError(found[0], key, f"expected one of {list(kind)}, got {found[1]!r}")
        elif kind is int:
            value = r.get_int(phase, key, class_section, minimum=1)
        elif kind is float:
            value = r.get_float(phase, key, class_section)
        else:
            value = r.get_str(phase, key, class_section)
        if value is not None:
            out[key] = value
    return out


#: How a model's hyper-parameters are fitted: "fast" (default) minimises psyserve's numpy objectives
#: with hand-derived gradients (PackedElbo for GPClassificationModel: `elbo`; PackedPairwiseLaplace
#: for PairwiseProbitModel: `laplace`); "botorch" uses BoTorch's own fitting (fit_gpytorch_mll).
FIT_METHODS = ("fast", "botorch")
_MODEL_OPTIONS: dict[str, type | tuple[str, ...]] = {"inducing_size": int, "max_fit_time": float}
#: the fitting switch each model reads (a switch another model would ignore is left unread: a warning)
_FIT_SWITCHES: dict[str, dict[str, type | tuple[str, ...]]] = {
    "GPClassificationModel": {"elbo": FIT_METHODS},
    "MonotonicProjectionGP": {"elbo": FIT_METHODS},
    "PairwiseProbitModel": {"laplace": FIT_METHODS},
    "OrdinalGPModel": {"elbo": FIT_METHODS},
    "VariationalGPModel": {"elbo": FIT_METHODS},
}
_GENERATOR_OPTIONS: dict[str, type] = {"restarts": int, "samps": int, "max_gen_time": float}
_ACQF_OPTIONS: dict[str, type] = {"target": float, "beta": float, "objective": str}
#: MCLevelSetEstimation's `straddle` (psyserve only): "latent" (default) sqrt(beta Var[f]) - |E f - F^-1(target)|,
#: "probability" AEPsych's sqrt(beta Var[p(f)]) - |E p(f) - target|
STRADDLE_SPACES = ("latent", "probability")
#: AEPsych's look-ahead types: at the level set {f > target} (its default) or at the response itself.
LOOKAHEAD_TYPES = ("levelset", "posterior")


def _parse_phase(
    r: _Reader,
    name: str,
    index: int,
    space: ParameterSpace,
    stimuli_per_trial: int,
    outcome_types: tuple[str, ...],
    experiment_seed: int | None,
    optimization: OptimizationSpec | None = None,
) -> PhaseSpec:
    generator = r.get_str(name, "generator")
    if generator is None:
        raise ConfigError(name, "generator", "missing generator")
    if generator in aepsych.UNSUPPORTED_GENERATORS:
        raise ConfigError(name, "generator", aepsych.unsupported_class_message("generator", generator, sorted(GENERATORS)))
    if generator not in GENERATORS:
        raise ConfigError(name, "generator", f"unknown generator {generator!r} (known: {sorted(GENERATORS)})")
    for key, why in aepsych.UNSUPPORTED_STRATEGY_KEYS.items():
        found = r.raw(name, key)
        if found is not None:
            raise ConfigError(found[0], key, f"not supported by psyserve: {why}")
    min_asks = r.get_int(name, "min_asks")
    n_trials = r.get_int(name, "n_trials")
    if min_asks is None and n_trials is not None:
        min_asks = n_trials
    max_asks = r.get_int(name, "max_asks")
    if min_asks is not None and max_asks is not None and max_asks < min_asks:
        raise ConfigError(name, "max_asks", f"max_asks ({max_asks}) is below min_asks ({min_asks})")
    min_total_tells = r.get_int(name, "min_total_tells")
    occurrences = r.get_int(name, "min_total_outcome_occurrences")
    if occurrences is None:
        occurrences = 1 if outcome_types[0] == "binary" else 0
    refit_every = r.get_int(name, "refit_every", minimum=1) or 1
    seed = r.get_int(name, "seed", generator)
    if seed is None:
        seed = (experiment_seed if experiment_seed is not None else 0) + index
    run_indefinitely = r.get_bool(name, "run_indefinitely")

    model = acqf = None
    model_options: dict[str, float | int | str] = {}
    generator_options: dict[str, float | int | str] = {}
    points: list[tuple[Any, ...]] = []
    shuffle = False
    parts: tuple[PartSpec, ...] = ()
    if generator == INDEPENDENT_GENERATOR:
        model, parts = _parse_independent(r, name, space, stimuli_per_trial, outcome_types, optimization)
        acqf = ", ".join(p.acqf for p in parts)
    elif generator in MODEL_GENERATORS:
        # EpsilonGreedyGenerator's subgenerator (AEPsych's default, the only one psyserve runs) reads
        # its settings from [OptimizeAcqfGenerator]; the grid generators from their own sections
        sub = r.get_str(name, "subgenerator", generator) if generator == "EpsilonGreedyGenerator" else None
        if sub is not None and sub != "OptimizeAcqfGenerator":
            found = r.raw(name, "subgenerator", generator)
            raise ConfigError(
                found[0] if found else generator, "subgenerator", f"only OptimizeAcqfGenerator is supported, got {sub!r}"
            )
        gen_sections = (generator, "OptimizeAcqfGenerator") if generator == "EpsilonGreedyGenerator" else (generator,)
        model = r.get_str(name, "model")
        if model is None:
            raise ConfigError(name, "model", f"{generator} needs a model")
        if model in aepsych.UNSUPPORTED_MODELS:
            raise ConfigError(name, "model", aepsych.unsupported_class_message("model", model, sorted(MODELS)))
        if model not in MODELS:
            raise ConfigError(name, "model", f"unknown model {model!r} (known: {sorted(MODELS)})")
        if model == INDEPENDENT_MODEL:
            raise ConfigError(name, "generator", f"{INDEPENDENT_MODEL} needs {INDEPENDENT_GENERATOR} (one generator per model), not {generator}")
        # VariationalGPModel: its likelihood decides its outcomes, acquisitions and read-outs (its family)
        likelihood = _variational_likelihood(r, name) if model == VARIATIONAL else {}
        family = model_family(model, likelihood)
        acqf = r.get_str(name, "acqf", *gen_sections)
        if acqf is None:
            raise ConfigError(name, "acqf", f"{generator} needs an acqf")
        if acqf in aepsych.UNSUPPORTED_ACQFS:
            raise ConfigError(name, "acqf", aepsych.unsupported_class_message("acquisition function", acqf, sorted(ACQFS)))
        if acqf not in ACQFS:
            raise ConfigError(name, "acqf", f"unknown acquisition function {acqf!r} (known: {sorted(ACQFS)})")
        _check_model_fits_experiment(name, model, stimuli_per_trial, outcome_types, likelihood)
        if not acqf_supports(model, acqf, likelihood):
            with_likelihood = f" with the {likelihood['likelihood']} likelihood" if likelihood else ""
            raise ConfigError(name, "acqf", f"acquisition function {acqf} does not work with {model}{with_likelihood}")
        if (model == OPTIMIZATION_MODEL) != (optimization is not None):
            raise ConfigError(
                name, "model", f"{OPTIMIZATION_MODEL} needs an [optimization] section" if optimization is None else f"an [optimization] experiment is modelled by {OPTIMIZATION_MODEL}, not {model}"
            )
        if optimization is not None:
            want = MULTI_OBJECTIVE_ACQF if optimization.multi_objective else SINGLE_OBJECTIVE_ACQF
            if acqf != want:
                raise ConfigError(name, "acqf", f"{len(optimization.objectives)} objective(s) take {want}, not {acqf}")
        _refuse_unhonoured_keys(r, name, model, acqf)
        model_options = _options(r, model, {**_MODEL_OPTIONS, **_FIT_SWITCHES.get(model, {})}, name)
        model_options.update(likelihood)
        model_options.update(_optimizer_options(r, name, model, family))
        model_options.update(_inducing_options(r, name, model, space, stimuli_per_trial))
        model_options.update(_mean_covar_options(r, name, model, space, stimuli_per_trial, outcome_types, family))
        if family == ORDINAL_MODEL:
            model_options["n_levels"] = _ordinal_levels(r, name, model)
        if optimization is not None and generator != "OptimizeAcqfGenerator":
            raise ConfigError(name, "generator", f"an [optimization] experiment's model phase uses OptimizeAcqfGenerator, not {generator}")
        generator_options = {}
        for section in reversed(gen_sections):  # the generator's own section wins
            generator_options.update(_options(r, section, _GENERATOR_OPTIONS, name))
        generator_options.update(_options(r, acqf, _ACQF_OPTIONS, name))
        if acqf == "MCLevelSetEstimation":  # psyserve's switch: where the straddle is measured
            generator_options.update(_options(r, acqf, {"straddle": STRADDLE_SPACES}, name))
        size = r.get_int(name, "query_set_size", acqf, minimum=16) if acqf in LOOKAHEAD_ACQFS else None
        if size is not None:  # AEPsych's reference set of the global look-ahead
            generator_options["lookahead_points"] = size
        if generator != "OptimizeAcqfGenerator":
            generator_options["method"] = MODEL_GENERATORS[generator]
        if generator == MIXED_GENERATOR:
            generator_options["discrete"] = _discrete_values(name, space, stimuli_per_trial)
        if generator == "EpsilonGreedyGenerator":
            epsilon = r.get_float(name, "epsilon", generator)
            epsilon = 0.1 if epsilon is None else epsilon  # AEPsych's default
            if not 0.0 <= epsilon <= 1.0:
                found = r.raw(name, "epsilon", generator)
                raise ConfigError(found[0] if found else generator, "epsilon", f"epsilon is a probability in [0, 1], got {epsilon:g}")
            generator_options["epsilon"] = epsilon
        # the look-ahead acquisitions look at the level set (AEPsych's default) or at the response
        # itself; elsewhere the key stays unread (a warning: AEPsych ignores it there too)
        lookahead = r.raw(acqf, "lookahead_type", name) if acqf in LOOKAHEAD_ACQFS else None
        if lookahead is not None:
            kind = lookahead[1].strip()
            if kind not in LOOKAHEAD_TYPES:
                raise ConfigError(lookahead[0], "lookahead_type", f"expected one of {list(LOOKAHEAD_TYPES)}, got {kind!r}")
            generator_options["lookahead_type"] = kind
        target = generator_options.get("target")
        if target is None and acqf in aepsych.LEVEL_SET_ACQFS and generator_options.get("lookahead_type") != "posterior":
            raise ConfigError(
                acqf, "target", f"{acqf} aims at a level set and needs a target: set it in [{acqf}], [{name}] or [common]"
            )
        if target is not None and outcome_types[0] == "binary" and not 0 < float(target) < 1:
            raise ConfigError(acqf, "target", f"target must lie in (0, 1) for binary outcomes, got {target}")
        objective = r.raw(name, "objective", acqf)
        if objective is not None:
            generator_options["objective"] = _objective(objective[0], objective[1].strip())
            if family == ORDINAL_MODEL and generator_options["objective"] not in ("", "IdentityMCObjective"):
                raise ConfigError(
                    objective[0],
                    "objective",
                    f"{objective[1].strip()} maps a binary model's latent to a probability; an ordinal model's acquisitions "
                    "work on its latent f (leave objective unset or IdentityMCObjective)",
                )
        if objective is not None and generator_options["objective"] in SEMIP_OBJECTIVES and model not in SEMIP_MODELS:
            raise ConfigError(objective[0], "objective", f"{objective[1].strip()} reads a semi-parametric model ({sorted(SEMIP_MODELS)}), not {model}")
        if generator == "IntensityAwareSemiPGenerator" and model not in SEMIP_MODELS:
            raise ConfigError(name, "model", f"IntensityAwareSemiPGenerator needs a semi-parametric model ({sorted(SEMIP_MODELS)}), not {model}")
        if model == "MonotonicProjectionGP":
            _monotonic_options(r, name, model, space, model_options)
        floor: float | None
        if model in SEMIP_MODELS:
            floor = _semip_model(r, name, model, acqf, objective, space, generator_options, model_options)
            target = generator_options.get("target")
        else:
            floor = _floor_link(r, name, model, acqf, objective, generator_options, model_options)
        if floor is not None and lookahead is not None and generator_options["lookahead_type"] == "posterior":
            raise ConfigError(
                lookahead[0], "lookahead_type", "not supported by psyserve: the posterior look-ahead is exact for the plain probit link, not with a floor objective"
            )
        if floor is not None and target is not None and not floor < float(target) < 1:
            found = r.raw(acqf, "target", name)
            raise ConfigError(
                found[0] if found else acqf,
                "target",
                f"target {target} is a response probability and must lie in (floor, 1) = ({floor:g}, 1): "
                "with a guess rate, lower probabilities are never reached",
            )
    elif generator == "SampleAroundPointsGenerator":
        points = _sample_around_points(r, name, generator, space, stimuli_per_trial, seed)
        shuffle = r.get_bool(name, "shuffle", generator, default=True)
        max_asks = len(points) if max_asks is None else min(max_asks, len(points))
        if min_asks is not None and min_asks > len(points):
            raise ConfigError(name, "min_asks", f"min_asks ({min_asks}) exceeds the {len(points)} points sampled around the reference points")
        generator = "ManualGenerator"  # from here on, a list of points like any manual phase
    elif generator == "ManualGenerator":
        text = r.get_str(name, "points", generator)
        if text is None:
            raise ConfigError(name, "points", "ManualGenerator needs a points list")
        points = _parse_points(name, text, space, stimuli_per_trial)
        shuffle = r.get_bool(name, "shuffle", generator)
        max_asks = len(points) if max_asks is None else min(max_asks, len(points))
        if min_asks is not None and min_asks > len(points):
            raise ConfigError(name, "min_asks", f"min_asks ({min_asks}) exceeds the {len(points)} manual points")
    return PhaseSpec(
        name=name,
        generator=generator,
        model=model,
        acqf=acqf,
        min_asks=min_asks,
        max_asks=max_asks,
        min_total_tells=min_total_tells,
        min_total_outcome_occurrences=occurrences,
        refit_every=refit_every,
        seed=seed,
        run_indefinitely=run_indefinitely,
        manual_points=tuple(points),
        shuffle=shuffle,
        model_options=model_options,
        generator_options=generator_options,
        parts=parts,
    )


#: the models whose fit uses inducing points (a variational GP) from AEPsych's allocators
INDUCING_MODELS: frozenset[str] = frozenset({"GPClassificationModel", "MonotonicProjectionGP", ORDINAL, VARIATIONAL}) | SEMIP_MODELS


def _inducing_options(r: _Reader, phase: str, model: str, space: ParameterSpace, stimuli_per_trial: int) -> dict[str, str]:
    """AEPsych's `inducing_point_method` (an allocator class name, read from [Model] then [phase]) and
    the allocator's own section: `points` for FixedAllocator / FixedPlusAllocator (rows in parnames
    order, raw units), `main_allocator` for FixedPlusAllocator."""
    found = r.raw(model, "inducing_point_method", phase)
    if found is None:
        return {}
    section, method = found[0], found[1].strip()
    if model not in INDUCING_MODELS:
        raise ConfigError(section, "inducing_point_method", f"not supported for {model}: AEPsych's inducing-point allocators are honoured for {sorted(INDUCING_MODELS)} only")
    if method not in INDUCING_ALLOCATORS:
        raise ConfigError(section, "inducing_point_method", f"unknown inducing-point allocator {method!r} (known: {list(INDUCING_ALLOCATORS)})")
    out = {"inducing_point_method": method}
    if method == "FixedPlusAllocator":
        main = r.raw(method, "main_allocator")
        name = main[1].strip() if main else "GreedyVarianceReduction"
        if name not in INDUCING_MAIN_ALLOCATORS:
            raise ConfigError(main[0] if main else method, "main_allocator", f"expected one of {list(INDUCING_MAIN_ALLOCATORS)}, got {name!r}")
        out["inducing_main_allocator"] = name
    if method in ("FixedAllocator", "FixedPlusAllocator"):
        text = r.raw(method, "points")
        if text is None:
            raise ConfigError(method, "points", f"{method} needs points: a list of inducing points in the order {list(space.names)}")
        rows = _parse_points(text[0], text[1], space, 1)
        unit = [space.to_unit(dict(zip(space.names, row[0], strict=True))).tolist() for row in rows]
        out["inducing_points"] = json.dumps(unit)
    return out


def _discrete_values(phase: str, space: ParameterSpace, stimuli_per_trial: int) -> str:
    """MixedOptimizeAcqfGenerator's discrete dimensions: each free integer, binary or categorical
    parameter's values in the unit cube, as JSON {free dimension: [unit values]} for the compute job."""
    if stimuli_per_trial != 1:
        raise ConfigError(phase, "generator", f"{MIXED_GENERATOR} is supported for one stimulus per trial")
    table: dict[str, list[float]] = {}
    combinations = 1
    for i, p in enumerate(space.free):
        if p.type is ParamType.CONTINUOUS:
            continue
        if p.type is ParamType.INTEGER:
            count = math.floor(p.upper) - math.ceil(p.lower) + 1
            if count > MAX_MIXED_COMBINATIONS:
                raise ConfigError(p.name, "upper_bound", f"{MIXED_GENERATOR} enumerates integer {p.name!r}'s {count} values: at most {MAX_MIXED_COMBINATIONS}")
            values = [p.to_unit(v) for v in range(math.ceil(p.lower), math.floor(p.upper) + 1)]
        elif p.type is ParamType.BINARY:
            values = [0.0, 1.0]
        else:
            values = [p.to_unit(c) for c in p.choices]
        table[str(i)] = sorted(set(values))
        combinations *= len(table[str(i)])
    if combinations > MAX_MIXED_COMBINATIONS:
        raise ConfigError(
            phase,
            "generator",
            f"{MIXED_GENERATOR} optimises the continuous parameters once per combination of the discrete ones: "
            f"{combinations} combinations, at most {MAX_MIXED_COMBINATIONS}",
        )
    return json.dumps(table)


def _alias_class(r: _Reader, name: str, known: frozenset[str] | set[str], where: tuple[str, str], what: str) -> str:
    """AEPsych's `models = [...]` / `generators = [...]` entries: a class name, or an alias section whose
    `class` names one."""
    if name in known:
        return name
    cls = r.get_str(name, "class") if r.parser.has_section(name) and r.has(name, "class") else None
    if cls is None:
        raise ConfigError(*where, f"{name!r} is neither a {what} psyserve supports ({sorted(known)}) nor a section with `class = ...`")
    if cls not in known:
        raise ConfigError(name, "class", f"{what} {cls!r} is not supported here (supported: {sorted(known)})")
    return cls


def _parse_independent(
    r: _Reader,
    phase: str,
    space: ParameterSpace,
    stimuli_per_trial: int,
    outcome_types: tuple[str, ...],
    optimization: OptimizationSpec | None,
) -> tuple[str, tuple[PartSpec, ...]]:
    """AEPsych's IndependentGPsModel + IndependentOptimizeAcqfGenerator: `models = [...]` (one per outcome,
    in `outcome_types` order) and `generators = [...]` (one OptimizeAcqfGenerator per model), each a class
    name or an alias section with `class = ...`; every part's options from its own sections."""
    generator = INDEPENDENT_GENERATOR
    model = r.get_str(phase, "model")
    if model != INDEPENDENT_MODEL:
        raise ConfigError(phase, "model", f"{generator} drives {INDEPENDENT_MODEL} (one model per outcome), not {model!r}")
    if optimization is not None:
        raise ConfigError(phase, "model", f"an [optimization] experiment is modelled by {OPTIMIZATION_MODEL}, not {model}")
    if stimuli_per_trial != 1:
        raise ConfigError("common", "stimuli_per_trial", f"{model} takes one stimulus per trial")
    models = r.get_list(model, "models", phase)
    if not models:
        raise ConfigError(model, "models", f"{model} needs `models = [...]`, one per outcome in [common] outcome_types")
    if len(models) != len(outcome_types):
        raise ConfigError(model, "models", f"has {len(models)} models for {len(outcome_types)} outcome types {list(outcome_types)}")
    generators = r.get_list(generator, "generators", phase)
    if not generators:
        raise ConfigError(generator, "generators", f"{generator} needs `generators = [...]`, one per model")
    if len(generators) != len(models):
        raise ConfigError(generator, "generators", f"has {len(generators)} generators for {len(models)} models")
    parts = []
    for i, (entry, gen_entry) in enumerate(zip(models, generators, strict=True)):
        cls = _alias_class(r, entry, INDEPENDENT_PARTS, (model, "models"), "model")
        try:
            _check_model_fits_experiment(phase, cls, 1, (outcome_types[i],))
        except ConfigError as exc:
            raise ConfigError(model, "models", f"model {i} ({entry}) for outcome {i} ({outcome_types[i]}): {str(exc).split(': ', 1)[-1]}") from None
        gen_cls = _alias_class(r, gen_entry, {"OptimizeAcqfGenerator"}, (generator, "generators"), "sub-generator")
        acqf = r.get_str(gen_entry, "acqf", gen_cls)
        if acqf is None:
            raise ConfigError(gen_entry, "acqf", f"generator {gen_entry!r} needs an acqf")
        if acqf in aepsych.UNSUPPORTED_ACQFS or acqf not in ACQFS:
            raise ConfigError(gen_entry, "acqf", f"unknown or unsupported acquisition function {acqf!r} (known: {sorted(ACQFS)})")
        if not acqf_supports(cls, acqf):
            raise ConfigError(gen_entry, "acqf", f"acquisition function {acqf} does not work with {cls} (model {i}, {entry})")
        _refuse_unhonoured_keys(r, entry, cls, acqf)
        likelihood = r.raw(cls, "likelihood", entry)
        default_likelihood = {"GPClassificationModel": "BernoulliLikelihood", ORDINAL_MODEL: "OrdinalLikelihood"}.get(cls)
        if likelihood is not None and likelihood[1].strip() != default_likelihood:
            raise ConfigError(likelihood[0], "likelihood", f"a model inside {model} keeps its default likelihood ({default_likelihood or 'Gaussian'})")
        model_options: dict[str, float | int | str] = {}
        for key, kind in {**_MODEL_OPTIONS, **_FIT_SWITCHES.get(cls, {})}.items():
            found = r.raw(entry, key, cls)
            if found is None:
                continue
            if isinstance(kind, tuple):
                value = found[1].strip().lower()
                if value not in kind:
                    raise ConfigError(found[0], key, f"expected one of {list(kind)}, got {found[1]!r}")
                model_options[key] = value
            elif kind is int:
                model_options[key] = r.get_int(entry, key, cls, minimum=1) or 1
            else:
                model_options[key] = r.get_float(entry, key, cls) or 0.0
        model_options.update(_inducing_options(r, entry, cls, space, 1))
        model_options.update(_mean_covar_options(r, entry, cls, space, 1, (outcome_types[i],)))
        if cls == ORDINAL_MODEL:
            model_options["n_levels"] = _ordinal_levels(r, entry, cls)
        generator_options: dict[str, float | int | str] = {}
        for key, kind in _GENERATOR_OPTIONS.items():
            number = r.get_int(gen_entry, key, gen_cls, minimum=1) if kind is int else r.get_float(gen_entry, key, gen_cls)
            if number is not None:
                generator_options[key] = number
        target = r.get_float(acqf, "target", gen_entry)
        if target is not None:
            generator_options["target"] = target
        beta = r.get_float(acqf, "beta", gen_entry)
        if beta is not None:
            generator_options["beta"] = beta
        if target is None and acqf in aepsych.LEVEL_SET_ACQFS:
            raise ConfigError(acqf, "target", f"{acqf} aims at a level set and needs a target: set it in [{acqf}], [{gen_entry}] or [common]")
        if target is not None and outcome_types[i] == "binary" and acqf in aepsych.LEVEL_SET_ACQFS and not 0 < target < 1:
            raise ConfigError(acqf, "target", f"target must lie in (0, 1) for binary outcomes, got {target}")
        objective = r.raw(acqf, "objective", gen_entry)
        if objective is not None:
            objective_name = _objective(objective[0], objective[1].strip())
            if objective_name in OBJECTIVE_LINKS or (cls != "GPClassificationModel" and objective_name not in ("", "IdentityMCObjective")):
                raise ConfigError(objective[0], "objective", f"{objective[1].strip()} is not supported for {cls} inside {model}")
            generator_options["objective"] = objective_name
        parts.append(PartSpec(entry, cls, acqf, model_options, generator_options))
    return model, tuple(parts)


def _check_model_fits_experiment(
    phase: str, model: str, stimuli_per_trial: int, outcome_types: tuple[str, ...], likelihood: Mapping[str, str] | None = None
) -> None:
    """AEPsych's semantic checks: a model must fit the trial shape and every outcome type (a
    VariationalGPModel's outcome type is its likelihood's: `likelihood`, from _variational_likelihood)."""
    if (model == "PairwiseProbitModel") != (stimuli_per_trial == 2):
        raise ConfigError(
            phase,
            "model",
            f"{model} does not fit [common] stimuli_per_trial = {stimuli_per_trial}"
            + (" (a pairwise model compares two stimuli per trial)" if model == "PairwiseProbitModel" else ""),
        )
    if model == OPTIMIZATION_MODEL:
        return  # one GP per metric; the [optimization] checks cover its outcomes
    if len(outcome_types) > 1:
        raise ConfigError(
            "common",
            "outcome_types",
            f"{len(outcome_types)} outcomes need one model per outcome: model = {INDEPENDENT_MODEL} with "
            f"generator = {INDEPENDENT_GENERATOR} (or, for optimisation, an [optimization] section with {OPTIMIZATION_MODEL})",
        )
    outcome = outcome_types[0]
    if model == VARIATIONAL:
        name = (likelihood or {}).get("likelihood", "gaussian")
        wants = _VARIATIONAL_OUTCOMES[name]
        if outcome != wants:
            raise ConfigError(
                phase,
                "model",
                f"{model} with the {name} likelihood models {wants} outcomes, but [common] outcome_types is {outcome} "
                f"(its likelihood for {outcome} outcomes: {_VARIATIONAL_CLASSES[outcome]})",
            )
        return
    if outcome == "ordinal" and model != ORDINAL_MODEL:
        raise ConfigError(phase, "model", f"{model} cannot model ordinal outcomes ([common] outcome_types): use OrdinalGPModel")
    if model == ORDINAL_MODEL and outcome != "ordinal":
        raise ConfigError(phase, "model", f"OrdinalGPModel needs ordinal outcomes, but [common] outcome_types is {outcome}")
    if (model in (*CLASSIFIERS, "PairwiseProbitModel") or model in SEMIP_MODELS) and outcome != "binary":
        raise ConfigError(phase, "model", f"{model} needs binary outcomes, but [common] outcome_types is {outcome}")
    if model == "GPRegressionModel" and outcome != "continuous":
        raise ConfigError(phase, "model", f"GPRegressionModel needs continuous outcomes, but [common] outcome_types is {outcome}")


#: VariationalGPModel's likelihood classes (AEPsych's names) -> contract.VARIATIONAL_LIKELIHOODS' names
_VARIATIONAL_LIKELIHOOD_CLASSES: dict[str, str] = {
    "GaussianLikelihood": "gaussian",
    "BernoulliLikelihood": "bernoulli",
    "BernoulliObjectiveLikelihood": "bernoulli",  # a floor objective's link: _floor_link
    "OrdinalLikelihood": "ordinal",
}
_VARIATIONAL_OUTCOMES = {"gaussian": "continuous", "bernoulli": "binary", "ordinal": "ordinal"}
_VARIATIONAL_CLASSES = {
    "continuous": "GaussianLikelihood (the default)",
    "binary": "BernoulliLikelihood",
    "ordinal": "OrdinalLikelihood",
}


def _variational_likelihood(r: _Reader, phase: str) -> dict[str, str]:
    """VariationalGPModel's `likelihood` (AEPsych 0.8's default: GaussianLikelihood) -> {"likelihood": name}."""
    found = r.raw(VARIATIONAL, "likelihood", phase)
    if found is None:
        return {"likelihood": "gaussian"}
    value = found[1].strip()
    if value not in _VARIATIONAL_LIKELIHOOD_CLASSES:
        raise ConfigError(
            found[0],
            "likelihood",
            f"not supported by psyserve: {VARIATIONAL}'s likelihoods here are {sorted(_VARIATIONAL_LIKELIHOOD_CLASSES)}, got {value!r}",
        )
    name = _VARIATIONAL_LIKELIHOOD_CLASSES[value]
    assert name in VARIATIONAL_LIKELIHOODS
    return {"likelihood": name}


#: AEPsych's L-BFGS-B options of a model's fit (its get_optimizer_options) -> psyserve's model options
_OPTIMIZER_KEYS: dict[str, tuple[str, type]] = {"maxiter": ("max_fit_iter", int), "ftol": ("fit_ftol", float)}
#: the L-BFGS-B options AEPsych passes on that psyserve's fits do not take
_UNSUPPORTED_OPTIMIZER_KEYS = ("maxcor", "gtol", "maxfun", "maxls")
#: the models psyserve fits on the variational ELBO (AEPsych's `mll_class` default, VariationalELBO)
_ELBO_FAMILIES = frozenset({"GPClassificationModel", "MonotonicProjectionGP", ORDINAL})


def _optimizer_options(r: _Reader, phase: str, model: str, family: str) -> dict[str, float | int | str]:
    """AEPsych's fitting options in a model's section: `maxiter` and `ftol` (its L-BFGS-B options) are
    honoured; its other L-BFGS-B options, and an `mll_class` other than the variational ELBO psyserve
    fits, are refused naming the key."""
    out: dict[str, float | int | str] = {}
    for key, (option, kind) in _OPTIMIZER_KEYS.items():
        found = r.raw(model, key, phase)
        if found is None:
            continue
        if kind is int:
            out[option] = r.get_int(model, key, phase, minimum=1) or 1
        else:
            value = r.get_float(model, key, phase)
            if value is None or value <= 0:
                raise ConfigError(found[0], key, f"must be positive, got {found[1].strip()!r}")
            out[option] = value
    for key in _UNSUPPORTED_OPTIMIZER_KEYS:
        found = r.raw(model, key)
        if found is not None:
            raise ConfigError(
                found[0], key, f"not supported by psyserve: the model fit's L-BFGS-B takes maxiter and ftol only, not {key}"
            )
    found = r.raw(model, "mll_class", phase)
    if found is not None:
        mll_class = found[1].strip()
        elbo = family in _ELBO_FAMILIES or model == VARIATIONAL
        if not (elbo and mll_class == "VariationalELBO"):
            fitted = "the variational ELBO (VariationalELBO)" if elbo else "its own marginal likelihood"
            raise ConfigError(found[0], "mll_class", f"not supported by psyserve: {model} is fitted on {fitted}, not {mll_class}")
    return out


def _ordinal_levels(r: _Reader, phase: str, model: str) -> int:
    """An OrdinalGPModel's n_levels: from [OrdinalLikelihood] (as AEPsych writes it, with `likelihood =
    OrdinalLikelihood`), the model's section, the phase or [common]; AEPsych's default 5."""
    found = r.raw("OrdinalLikelihood", "n_levels", model, phase)
    if found is None:
        return DEFAULT_N_LEVELS
    k = r.get_int("OrdinalLikelihood", "n_levels", model, phase, minimum=2)
    assert k is not None
    if k > MAX_LEVELS:
        raise ConfigError(found[0], "n_levels", f"at most {MAX_LEVELS} levels, got {k}")
    return k


def _refuse_unhonoured_keys(r: _Reader, phase: str, model: str, acqf: str) -> None:
    """Keys AEPsych would honour but psyserve cannot: refused, naming where they stand."""
    for key, why in aepsych.UNSUPPORTED_MODEL_KEYS.items():
        if key == "likelihood":
            continue  # _floor_link honours the Bernoulli likelihoods and refuses the rest
        found = r.raw(model, key, phase)
        if found is None:
            continue
        raise ConfigError(found[0], key, f"not supported by psyserve: {why}")
    for key, why in aepsych.UNSUPPORTED_ACQF_KEYS.items():
        found = r.raw(acqf, key, phase)
        if found is not None:
            raise ConfigError(found[0], key, f"not supported by psyserve: {why}")


#: AEPsych 0.8's mean/covariance factories psyserve honours -> the `factory` model option.
_FACTORIES: dict[str, str] = {
    "default_mean_covar_factory": "default",
    "song_mean_covar_factory": "song",
    "pairwise_mean_covar_factory": "pairwise",
}
#: The models whose mean and kernel the factories set in psyserve.
_FACTORY_MODELS = ("GPClassificationModel", "GPRegressionModel", "PairwiseProbitModel")
_LENGTHSCALE_PRIORS = ("gamma", "lognormal", "invgamma")
_OUTPUTSCALE_PRIORS = ("box", "gamma")
_KERNELS = {"RBFKernel": "rbf", "MaternKernel": "matern52"}


def _check_factory_bounds(r: _Reader, section: str, dim: int) -> None:
    """AEPsych's factories read lb/ub for the dimension only: given in the factory's own section, they must agree."""
    for key in ("lb", "ub"):
        if r.has(section, key):
            values = r.get_list(section, key) or []
            if len(values) != dim:
                raise ConfigError(section, key, f"{len(values)} bound(s) for {dim} model dimension(s)")


def _mean_covar_options(
    r: _Reader,
    phase: str,
    model: str,
    space: ParameterSpace,
    stimuli_per_trial: int,
    outcome_types: tuple[str, ...],
    family: str | None = None,
) -> dict[str, float | int | str]:
    """AEPsych's mean/covariance factories (`mean_covar_factory`, and the options in the factories'
    own sections) as model options for compute.mean_covar; what cannot be honoured is refused.
    Without any factory option the model keeps psyserve's own mean and kernel (and fast fitting).
    `family`: the model kind whose checks apply (a VariationalGPModel's likelihood's, contract.model_family)."""
    kind = family or model
    found = r.raw(model, "mean_covar_factory", phase)
    name = found[1].strip() if found is not None else "default_mean_covar_factory"
    where = found[0] if found is not None else model
    default = "default_mean_covar_factory"
    sections_used = [s for s in (default, name) if r.parser.has_section(s) and r.parser.options(s)]
    if found is None and not sections_used:
        return {}
    if model not in _FACTORY_MODELS and model != VARIATIONAL:  # VariationalGPModel: AEPsych's default factory
        # naming the factory a model uses anyway changes nothing (OrdinalGPModel: AEPsych's ordinal
        # priors, zero mean and an RBF without output scale, are what psyserve fits)
        if not sections_used and name in (default, "ordinal_mean_covar_factory" if model == ORDINAL_MODEL else default):
            return {}
        raise ConfigError(
            where if found is not None else sections_used[0],
            "mean_covar_factory" if found is not None else r.parser.options(sections_used[0])[0],
            f"not supported by psyserve: the mean/covariance factories set the mean and kernel of {list(_FACTORY_MODELS)}, not of {model}",
        )
    if name in aepsych.RETIRED_FACTORIES:
        raise ConfigError(where, "mean_covar_factory", f"{name}: {aepsych.RETIRED_FACTORIES[name]}")
    if name not in _FACTORIES:
        raise ConfigError(where, "mean_covar_factory", f"unknown mean/covariance factory {name!r} (AEPsych 0.8's, honoured by psyserve: {sorted(_FACTORIES)})")
    factory = _FACTORIES[name]
    dim = space.dim
    opts: dict[str, float | int | str] = {}
    if factory == "song":
        if kind != "GPClassificationModel":
            raise ConfigError(where, "mean_covar_factory", f"song_mean_covar_factory fixes the mean at a response probability's probit: it is for binary classification, not {model}")
        _check_factory_bounds(r, name, dim)
        target = r.get_float(name, "target")
        target = 0.75 if target is None else target
        if not 0 < target < 1:
            raise ConfigError(name, "target", f"target is a response probability in (0, 1), got {target:g}")
        stim_dim = r.get_int(name, "stim_dim", minimum=-dim)
        stim_dim = -1 if stim_dim is None else stim_dim
        if not -dim <= stim_dim < dim:
            raise ConfigError(name, "stim_dim", f"stim_dim indexes the {dim} model dimension(s) {[p.name for p in space.free]}: must be in [{-dim}, {dim}), got {stim_dim}")
        opts.update(factory="song", mean="fixed", mean_constant=NormalDist().inv_cdf(target), stim_dim=stim_dim % dim)
        opts["intensity_rbf"] = int(r.get_bool(name, "intensity_RBF"))  # AEPsych's spelling (keys keep their case)
        return opts
    # the default factory's options (the pairwise factory reads its base kernel and mean from them too)
    _check_factory_bounds(r, default, dim)
    if factory == "pairwise":
        if kind != "GPClassificationModel" or stimuli_per_trial != 1:
            raise ConfigError(where, "mean_covar_factory", "pairwise_mean_covar_factory is for GPClassificationModel on pairs written as one stimulus (stimuli_per_trial = 1, each parameter twice)")
        base = r.get_str(name, "base_mean_covar_factory")
        if base is not None and base != default:
            raise ConfigError(name, "base_mean_covar_factory", f"only {default} can be the base factory (as in AEPsych 0.8), got {base!r}")
        shared_raw = r.get_list(name, "shared_dims") or []
        try:
            shared = sorted({int(s) for s in shared_raw})
        except ValueError:
            raise ConfigError(name, "shared_dims", f"expected a list of dimension indices, got {shared_raw}") from None
        if any(not 0 <= s < dim for s in shared) or len(shared) >= dim:
            raise ConfigError(name, "shared_dims", f"indices into the {dim} model dimension(s), fewer than {dim} of them, got {shared_raw}")
        if (dim - len(shared)) % 2 or dim - len(shared) < 2:
            raise ConfigError(name, "shared_dims", f"the {dim - len(shared)} dimension(s) not shared must split into two equal halves (one per stimulus)")
        opts["factory"] = "pairwise"
        if shared:
            opts["shared_dims"] = ",".join(str(s) for s in shared)
        if r.get_bool(name, "zero_mean", default=True):
            opts["mean"] = "zero"
    mean_keys = [k for k in ("zero_mean", "fixed_mean") if r.has(default, k)]
    if mean_keys and kind == "PairwiseProbitModel":
        raise ConfigError(default, mean_keys[0], "not supported by psyserve: PairwiseProbitModel's utility has no mean to set (only its kernel)")
    if r.get_bool(default, "zero_mean"):
        opts["mean"] = "zero"
    if r.get_bool(default, "fixed_mean"):
        if kind in ("GPRegressionModel", ORDINAL_MODEL):
            raise ConfigError(default, "fixed_mean", f"fixed_mean fixes the latent mean at a response probability's probit (target): it is for binary models, not {model}")
        target = r.get_float(default, "target")
        if target is None:
            raise ConfigError(default, "target", "fixed_mean = True needs a target (a response probability) to fix the mean at")
        if not 0 < target < 1:
            raise ConfigError(default, "target", f"target is a response probability in (0, 1), got {target:g}")
        opts.update(mean="fixed", mean_constant=NormalDist().inv_cdf(target))
    prior = r.get_str(default, "lengthscale_prior")
    if prior is not None:
        if prior not in _LENGTHSCALE_PRIORS:
            raise ConfigError(default, "lengthscale_prior", f"expected one of {list(_LENGTHSCALE_PRIORS)}, got {prior!r}")
        opts["ls_prior"] = prior
        if prior == "lognormal":  # AEPsych reads the location and scale for the log-normal prior only
            for key in ("ls_loc", "ls_scale"):
                value = r.get_float(default, key)
                if value is not None:
                    if key == "ls_scale" and value <= 0:
                        raise ConfigError(default, key, f"must be positive, got {value:g}")
                    opts[key] = value
    fixed_amplitude = r.get_bool(default, "fixed_kernel_amplitude") if r.has(default, "fixed_kernel_amplitude") else None
    outputscale = r.get_str(default, "outputscale_prior")
    if outputscale is not None and outputscale not in _OUTPUTSCALE_PRIORS:
        raise ConfigError(default, "outputscale_prior", f"expected one of {list(_OUTPUTSCALE_PRIORS)}, got {outputscale!r}")
    if fixed_amplitude:
        opts["outputscale"] = "fixed"
    elif outputscale is not None or fixed_amplitude is False:
        opts["outputscale"] = outputscale or "box"
    kernel = r.get_str(default, "kernel")
    if kernel is not None:
        if kernel not in _KERNELS:
            raise ConfigError(default, "kernel", f"psyserve's kernels are {sorted(_KERNELS)} (Matern with nu = 2.5), got {kernel!r}")
        opts["kernel"] = _KERNELS[kernel]
    if opts and "factory" not in opts:
        opts["factory"] = "default"
    # the default factory with none of its options set is what every model fits anyway: nothing to pass
    return opts


def _floor_link(
    r: _Reader,
    phase: str,
    model: str,
    acqf: str,
    objective: tuple[str, str] | None,
    generator_options: dict[str, float | int | str],
    model_options: dict[str, float | int | str],
) -> float | None:
    """A floor objective (n-AFC guess rate): the link the model is fitted with and every acquisition
    and read-out uses. Named by the acquisition's `objective` and/or, as AEPsych writes it, by
    `likelihood = BernoulliObjectiveLikelihood` with `[BernoulliObjectiveLikelihood] objective`; both
    must agree. Its `floor` is read from the objective's own section (AEPsych's default 0.5).
    Returns the floor, or None without a floor objective."""
    from_acqf = None if objective is None else objective[1].strip()
    from_likelihood = None
    likelihood = r.raw(model, "likelihood", phase)
    family = model_family(model, model_options)
    classifier = model in CLASSIFIERS or family == "GPClassificationModel"  # VariationalGPModel: Bernoulli
    if likelihood is not None:
        value = likelihood[1].strip()
        if value == "BernoulliObjectiveLikelihood" and classifier:
            found = r.raw("BernoulliObjectiveLikelihood", "objective")
            if found is None:
                raise ConfigError("BernoulliObjectiveLikelihood", "objective", "BernoulliObjectiveLikelihood needs an objective")
            from_likelihood = found[1].strip()
            if from_likelihood not in OBJECTIVE_LINKS and from_likelihood.lower() != "probitobjective":
                raise ConfigError(
                    found[0], "objective", f"supported likelihood objectives: {sorted([*OBJECTIVE_LINKS, 'ProbitObjective'])}"
                )
        elif (
            not (value == "BernoulliLikelihood" and classifier)
            and not (value == "OrdinalLikelihood" and family == ORDINAL_MODEL)
            and not (value == "GaussianLikelihood" and model == VARIATIONAL)
        ):
            raise ConfigError(
                likelihood[0], "likelihood", f"not supported by psyserve: {aepsych.UNSUPPORTED_MODEL_KEYS['likelihood']}"
            )
    chosen = [o for o in (from_acqf, from_likelihood) if o is not None and o in OBJECTIVE_LINKS]
    if not chosen:  # no floor objective: the default probit (BernoulliLikelihood / ProbitObjective)
        return None
    name = chosen[0]
    where = objective[0] if from_acqf is not None and objective is not None else "BernoulliObjectiveLikelihood"
    if not classifier:
        raise ConfigError(where, "objective", f"{name} is a response link for binary outcomes; {model} cannot use it")
    other = from_likelihood if from_acqf == name else from_acqf
    if other is not None and other != name and other.lower() not in ("identitymcobjective", "identity", "none"):
        raise ConfigError(
            where,
            "objective",
            f"the acquisition's objective ({from_acqf}) and the likelihood's ({from_likelihood}) must name the same link: "
            "psyserve fits the model with the floor objective's link and reads the acquisition and queries through it",
        )
    floor = r.get_float(name, "floor")
    if floor is None:
        floor = 0.5  # AEPsych's default floor
    if not 0.0 <= floor < 1.0:
        found = r.raw(name, "floor")
        raise ConfigError(found[0] if found else name, "floor", f"floor (the guess rate) must lie in [0, 1), got {floor:g}")
    if acqf in LOOKAHEAD_ACQFS and OBJECTIVE_LINKS[name] != "probit":
        raise ConfigError(
            where, "objective", f"{acqf}'s look-ahead is exact for a probit link only: use FloorProbitObjective with it, not {name}"
        )
    model_options["link"] = OBJECTIVE_LINKS[name]
    model_options["floor"] = floor
    if from_acqf == name or from_acqf is None:
        generator_options["objective"] = name
    generator_options["floor"] = floor
    return floor


#: GP classification and its monotone projection: the same fit, likelihoods and floor objectives
CLASSIFIERS = ("GPClassificationModel", "MonotonicProjectionGP")


def _monotonic_options(r: _Reader, phase: str, model: str, space: ParameterSpace, model_options: dict[str, float | int | str]) -> None:
    """MonotonicProjectionGP: `monotonic_dims` (indices among the free parameters; AEPsych's default [-1],
    the last; negative ones count from the end), `monotonic_grid_size` (default 20), `min_f_val`."""
    found = r.raw(phase, "monotonic_dims", model)
    dims: list[int] = []
    for text in parse_list(found[1]) if found is not None else ["-1"]:
        try:
            i = int(text)
        except ValueError:
            raise ConfigError(found[0] if found else model, "monotonic_dims", f"expected parameter indices, got {text!r}") from None
        j = i + space.dim if i < 0 else i
        if not 0 <= j < space.dim:
            raise ConfigError(
                found[0] if found else model, "monotonic_dims", f"{i} is not one of the {space.dim} free parameters (0-based)"
            )
        if j not in dims:
            dims.append(j)
    if not dims:
        raise ConfigError(found[0] if found else model, "monotonic_dims", "names no parameter")
    model_options["monotonic_dims"] = ",".join(str(j) for j in dims)
    size = r.get_int(phase, "monotonic_grid_size", model, minimum=1)
    if size is not None:
        model_options["monotonic_grid_size"] = size
    min_f = r.get_float(phase, "min_f_val", model)
    if min_f is not None:
        model_options["min_f_val"] = min_f


#: AEPsych's read-outs of a semi-parametric model, usable as an acquisition's objective
SEMIP_OBJECTIVES = ("SemiPThresholdObjective", "SemiPProbabilityObjective")
#: each semi-parametric model's likelihoods -> the link AEPsych gives it without an objective
_SEMIP_LIKELIHOODS: dict[str, dict[str, tuple[str, float] | None]] = {
    "SemiParametricGPModel": {"LinearBernoulliLikelihood": ("FloorProbitObjective", 0.0)},
    "HadamardSemiPModel": {"BernoulliObjectiveLikelihood": None, "BernoulliLikelihood": ("ProbitObjective", 0.0)},
}
#: AEPsych's default likelihood of each (HadamardSemiPModel: a logistic link with a 0.5 floor)
_SEMIP_DEFAULT_LINK = {"SemiParametricGPModel": ("FloorProbitObjective", 0.0), "HadamardSemiPModel": ("FloorLogitObjective", 0.5)}


def _semip_model(
    r: _Reader,
    phase: str,
    model: str,
    acqf: str,
    objective: tuple[str, str] | None,
    space: ParameterSpace,
    generator_options: dict[str, float | int | str],
    model_options: dict[str, float | int | str],
) -> float:
    """SemiParametricGPModel / HadamardSemiPModel: `stim_dim` (an index among the free parameters, default 0,
    a continuous or integer one), `slope_mean` (default 2), the likelihood (SemiParametricGPModel:
    LinearBernoulliLikelihood; HadamardSemiPModel: BernoulliObjectiveLikelihood, AEPsych's default a
    FloorLogitObjective with floor 0.5, or BernoulliLikelihood = probit) with its objective's link and
    `floor`; an acquisition objective must be a semi-p read-out, ProbitObjective (read through the model's
    link) or the likelihood's own floor objective. Returns the floor."""
    stim = r.get_int(phase, "stim_dim", model, minimum=0)
    stim = 0 if stim is None else stim
    if stim >= space.dim:
        found = r.raw(phase, "stim_dim", model)
        raise ConfigError(found[0] if found else model, "stim_dim", f"stim_dim {stim} is not one of the {space.dim} free parameters (0-based)")
    param = space.free[stim]
    if param.type not in (ParamType.CONTINUOUS, ParamType.INTEGER):
        found = r.raw(phase, "stim_dim", model)
        raise ConfigError(
            found[0] if found else model, "stim_dim", f"the intensity dimension must be a continuous parameter, {param.name!r} is {param.type.value}"
        )
    slope_mean = r.get_float(phase, "slope_mean", model)
    model_options["stim_dim"] = stim
    if slope_mean is not None:
        model_options["slope_mean"] = slope_mean
    allowed = _SEMIP_LIKELIHOODS[model]
    likelihood = r.raw(model, "likelihood", phase)
    if likelihood is None:
        link_name, floor_default = _SEMIP_DEFAULT_LINK[model]
        floor = floor_default
    else:
        value = likelihood[1].strip()
        if value not in allowed:
            raise ConfigError(likelihood[0], "likelihood", f"{model} takes {sorted(allowed)}, not {value!r}")
        default = allowed[value]
        found = r.raw(value, "objective") if value != "BernoulliLikelihood" else None
        if found is None:
            if default is None:
                raise ConfigError(value, "objective", f"{value} needs an objective")
            link_name, floor = default
        else:
            link_name = found[1].strip()
            if link_name not in OBJECTIVE_LINKS and link_name.lower() != "probitobjective":
                raise ConfigError(found[0], "objective", f"supported likelihood objectives: {sorted([*OBJECTIVE_LINKS, 'ProbitObjective'])}")
            floor = 0.0 if link_name.lower() == "probitobjective" else 0.5  # AEPsych's floor objectives default to 0.5
    if link_name in OBJECTIVE_LINKS:
        given = r.get_float(link_name, "floor")
        if given is not None:
            floor = given
        if not 0.0 <= floor < 1.0:
            found = r.raw(link_name, "floor")
            raise ConfigError(found[0] if found else link_name, "floor", f"floor (the guess rate) must lie in [0, 1), got {floor:g}")
    kind = OBJECTIVE_LINKS.get(link_name, "probit")
    model_options["link"] = kind
    model_options["floor"] = floor
    acq_obj = None if objective is None else str(generator_options.get("objective", ""))
    if acq_obj in OBJECTIVE_LINKS and (acq_obj != link_name or float(generator_options.get("floor", floor)) != floor):
        assert objective is not None
        raise ConfigError(
            objective[0], "objective", f"{acq_obj} differs from {model}'s likelihood link ({link_name}, floor {floor:g}); name the likelihood's objective or a SemiP objective"
        )
    if acq_obj in OBJECTIVE_LINKS:
        generator_options["floor"] = floor
    if acq_obj == "SemiPThresholdObjective":
        assert objective is not None
        if acqf != "MCPosteriorVariance":
            raise ConfigError(objective[0], "objective", f"SemiPThresholdObjective is read by MCPosteriorVariance (the threshold's posterior variance), not {acqf}")
        target = r.get_float("SemiPThresholdObjective", "target")
        if target is not None:
            generator_options["target"] = target
    for section in SEMIP_OBJECTIVES:
        own = r.get_int(section, "stim_dim") if r.parser.has_section(section) else None
        if own is not None and own != stim:
            raise ConfigError(section, "stim_dim", f"{section}'s stim_dim {own} differs from the model's {stim}")
    if acqf in LOOKAHEAD_ACQFS and kind != "probit":
        raise ConfigError(
            likelihood[0] if likelihood else model,
            "likelihood",
            f"{acqf}'s look-ahead is exact for a probit link only; {model}'s link is {link_name} (AEPsych's default for it): "
            "use BernoulliLikelihood or a FloorProbitObjective",
        )
    set_target = generator_options.get("target")
    if set_target is not None and not floor < float(set_target) < 1:
        found = r.raw(acqf, "target", phase)
        raise ConfigError(found[0] if found else acqf, "target", f"target {set_target} is a response probability and must lie in (floor, 1) = ({floor:g}, 1)")
    return floor


def _objective(section: str, text: str) -> str:
    """Validate an acquisition objective name; refuse what psyserve cannot honour."""
    if text in OBJECTIVE_LINKS:
        return text
    if text.lower() in aepsych.SUPPORTED_OBJECTIVES:
        return aepsych.SUPPORTED_OBJECTIVES[text.lower()]
    supported = sorted(v for v in set(aepsych.SUPPORTED_OBJECTIVES.values()) if v)
    if text in aepsych.UNSUPPORTED_OBJECTIVES:
        raise ConfigError(section, "objective", aepsych.unsupported_class_message("objective", text, supported))
    raise ConfigError(section, "objective", f"unknown objective {text!r} (known: {supported})")


def _parse_points(section: str, text: str, space: ParameterSpace, stimuli_per_trial: int) -> list[tuple[Any, ...]]:
    """Manual points: a list of points in parnames order (pairs of points for pairwise)."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        # allow bare words for categorical values: [[a, 1], [b, 2]]
        try:
            value = ast.literal_eval(_quote_words(text.strip()))
        except (ValueError, SyntaxError):
            raise ConfigError(section, "points", "expected a list of points like [[0.1, 0.2], [0.3, 0.4]]") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(section, "points", "expected a non-empty list of points")
    if len(value) > MAX_MANUAL_POINTS:
        raise ConfigError(section, "points", f"at most {MAX_MANUAL_POINTS} points")
    names = space.names
    out = []
    for i, point in enumerate(value):
        stimuli = list(point) if stimuli_per_trial == 2 else [point]
        if stimuli_per_trial == 2 and len(stimuli) != 2:
            raise ConfigError(section, "points", f"point {i}: expected a pair of stimuli")
        checked = []
        for stim in stimuli:
            if not isinstance(stim, (list, tuple)) or len(stim) != len(names):
                raise ConfigError(section, "points", f"point {i}: expected {len(names)} values in the order {names}")
            try:
                checked.append(tuple(space.validate_stimulus(dict(zip(names, stim)), f"point {i}").values()))
            except ValueError as exc:
                raise ConfigError(section, "points", str(exc)) from None
        out.append(tuple(checked))
    return out


def _sample_around_points(
    r: _Reader, phase: str, generator: str, space: ParameterSpace, stimuli_per_trial: int, seed: int
) -> list[tuple[Any, ...]]:
    """AEPsych's SampleAroundPointsGenerator: ``samples_per_point`` scrambled-Sobol points (one engine,
    seeded by the phase's seed) in the box ``point +- window`` clipped to the bounds, for each
    reference point in ``points``; ``window`` is one half-width per parameter (or one for all)."""
    if stimuli_per_trial != 1:
        raise ConfigError(phase, "generator", f"{generator} is supported for one stimulus per trial")
    for p in space.parameters:
        if p.type not in (ParamType.CONTINUOUS, ParamType.INTEGER) or p.log_scale:
            raise ConfigError(p.name, "par_type", f"{generator} samples linear continuous or integer parameters, not {p.name!r}")
    text = r.get_str(phase, "points", generator)
    if text is None:
        raise ConfigError(phase, "points", f"{generator} needs a points list")
    centres = [stim[0] for stim in _parse_points(phase, text, space, 1)]
    found = r.raw(phase, "window", generator)
    if found is None:
        raise ConfigError(generator, "window", f"{generator} needs a window (half-width per parameter)")
    try:
        window = [float(w) for w in parse_list(found[1])] if found[1].strip().startswith("[") else [float(found[1])]
    except ValueError:
        raise ConfigError(found[0], "window", f"expected numbers, got {found[1]!r}") from None
    if len(window) == 1:
        window = window * len(space.parameters)
    if len(window) != len(space.parameters) or not all(math.isfinite(w) and w >= 0 for w in window):
        raise ConfigError(found[0], "window", f"expected {len(space.parameters)} non-negative half-widths, got {found[1]!r}")
    per_point = r.get_int(phase, "samples_per_point", generator, minimum=1)
    if per_point is None:
        raise ConfigError(generator, "samples_per_point", f"{generator} needs samples_per_point")
    if per_point * len(centres) > MAX_MANUAL_POINTS:
        raise ConfigError(generator, "samples_per_point", f"at most {MAX_MANUAL_POINTS} points in all")
    import warnings as _warnings

    from scipy.stats import qmc  # lazily: only configs that use this generator pay the import

    engine = qmc.Sobol(len(space.parameters), scramble=True, seed=seed)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # Sobol balance warning for counts that are not powers of 2
        unit = engine.random(per_point * len(centres))
    out: list[tuple[Any, ...]] = []
    for i, centre in enumerate(centres):
        lo = [max(float(c) - w, p.lower) for c, w, p in zip(centre, window, space.parameters)]
        hi = [min(float(c) + w, p.upper) for c, w, p in zip(centre, window, space.parameters)]
        for u in unit[i * per_point : (i + 1) * per_point]:
            values = [lo_k + (hi_k - lo_k) * float(u_k) for lo_k, hi_k, u_k in zip(lo, hi, u)]
            values = [
                float(min(max(round(v), math.ceil(p.lower)), math.floor(p.upper))) if p.type is ParamType.INTEGER else v
                for v, p in zip(values, space.parameters)
            ]
            stim = space.validate_stimulus(dict(zip(space.names, values)), f"{generator} point")
            out.append((tuple(stim.values()),))
    return out


def _quote_words(text: str) -> str:
    import re

    return re.sub(
        r"(?<![\w.'\"])([A-Za-z_][\w\-]*)(?![\w'\"])",
        lambda m: repr(m.group(1)) if m.group(1) not in ("True", "False") else m.group(1),
        text,
    )
