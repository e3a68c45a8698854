"""Bad input gets the right status code and a message naming the field; nothing is journaled."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import grpc
import pytest

import psyserve_client as pc
from conftest import CONFIGS, ServerThread
from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb
from psyserve_client._proto.psyserve.v1 import service_pb2_grpc

CONFIG = (CONFIGS / "sobol_manual.ini").read_text()
GOOD = {"contrast": 0.5, "frequency": 3, "shape": "circle", "eye": True}


def event_count(db: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


BAD_CONFIGS = [
    ("[common\nparnames = [a]", "config_ini[common]", "malformed INI"),
    ("[common]\nstrategy_names = [s]\n[s]\ngenerator = SobolGenerator", "config_ini[common].parnames", "parameter list"),
    (
        "[common]\nparnames = [a]\nstrategy_names = [s]\n[a]\nupper_bound = 1\n[s]\ngenerator = SobolGenerator",
        "config_ini[a].lower_bound",
        "lower bound",
    ),
    (
        "[common]\nparnames = [a]\nstrategy_names = [s]\n[a]\nlower_bound = 2\nupper_bound = 1\n[s]\ngenerator = SobolGenerator",
        "config_ini[a].upper_bound",
        "must be below",
    ),
    (
        "[common]\nparnames = [a]\nstrategy_names = [s]\n[a]\nlower_bound = 0\nupper_bound = 1\n[s]\ngenerator = MagicGenerator",
        "config_ini[s].generator",
        "unknown generator",
    ),
    (
        "[common]\nparnames = [a]\nstrategy_names = [s]\n[a]\nlower_bound = 0\nupper_bound = 1\n[s]\ngenerator = OptimizeAcqfGenerator\nmodel = MagicModel\nacqf = EAVC",
        "config_ini[s].model",
        "unknown model",
    ),
    (
        "[common]\nparnames = [a]\nstrategy_names = [s]\n[a]\nlower_bound = 0\nupper_bound = 1\n[s]\ngenerator = OptimizeAcqfGenerator\nmodel = GPClassificationModel\nacqf = Magic",
        "config_ini[s].acqf",
        "unknown acquisition",
    ),
    (
        "[common]\nparnames = [a]\nstrategy_names = [s]\n[a]\nlower_bound = -1\nupper_bound = 1\nlog_scale = True\n[s]\ngenerator = SobolGenerator",
        "config_ini[a].log_scale",
        "positive lower bound",
    ),
    (
        "[common]\nparnames = [a]\nstrategy_names = [s, t]\n[a]\nlower_bound = 0\nupper_bound = 1\n[s]\ngenerator = SobolGenerator",
        "config_ini[t]",
        "has no section",
    ),
    (
        "[common]\nparnames = [a]\nstrategy_names = [s]\n[a]\npar_type = categorical\n[s]\ngenerator = SobolGenerator",
        "config_ini[a].choices",
        "choices",
    ),
    (
        "[common]\nparnames = [a]\nstrategy_names = [s]\n[a]\nlower_bound = 0\nupper_bound = 1\n[s]\ngenerator = SobolGenerator\nmin_asks = lots",
        "config_ini[s].min_asks",
        "integer",
    ),
    ("", "config_ini", "empty"),
]


@pytest.mark.parametrize(("config", "field", "words"), BAD_CONFIGS)
def test_bad_config_is_invalid_argument(server: ServerThread, config: str, field: str, words: str) -> None:
    before = event_count(server.options.db)
    with pc.Client(server.address, timeout=10) as client:
        with pytest.raises(pc.InvalidArgumentError) as err:
            client.configure(config_str=config)
    assert err.value.field == field, err.value
    assert words in err.value.message
    assert event_count(server.options.db) == before


def test_bad_requests(server: ServerThread) -> None:
    db = server.options.db
    with pc.Client(server.address, timeout=10) as client:
        sid = client.configure(config_str=CONFIG).strategy_id
        trial = client.ask().trials[0]
        before = event_count(db)

        cases: list[tuple[Callable[[], Any], type[pc.PsyserveError], str, str]] = [
            (lambda: client.ask(strategy_id=12345), pc.NotFoundError, "strategy_id", "12345"),
            (lambda: client.tell(trial_id=1, outcome=1, strategy_id=777), pc.NotFoundError, "strategy_id", "777"),
            (lambda: client.tell(trial_id=99, outcome=1), pc.NotFoundError, "trial_id", "99"),
            (
                lambda: client.tell(trial_id=trial.trial_id, outcome=float("nan")),
                pc.InvalidArgumentError,
                "outcomes[0].value",
                "finite",
            ),
            (lambda: client.tell(trial_id=trial.trial_id, outcome=0.5), pc.InvalidArgumentError, "outcomes[0].value", "binary"),
            (
                lambda: client.tell(config={**GOOD, "colour": 1.0}, outcome=1),
                pc.InvalidArgumentError,
                "stimuli[0].colour",
                "colour",
            ),
            (
                lambda: client.tell(config={**GOOD, "contrast": 2.0}, outcome=1),
                pc.InvalidArgumentError,
                "stimuli[0].contrast",
                "outside its bounds",
            ),
            (
                lambda: client.tell(config={**GOOD, "frequency": 2.5}, outcome=1),
                pc.InvalidArgumentError,
                "stimuli[0].frequency",
                "integer",
            ),
            (
                lambda: client.tell(config={**GOOD, "shape": "star"}, outcome=1),
                pc.InvalidArgumentError,
                "stimuli[0].shape",
                "not one of",
            ),
            (
                lambda: client.tell(config={**GOOD, "contrast": "high"}, outcome=1),
                pc.InvalidArgumentError,
                "stimuli[0].contrast",
                "expected a number",
            ),
            (
                lambda: client.tell(config={k: v for k, v in GOOD.items() if k != "eye"}, outcome=1),
                pc.InvalidArgumentError,
                "stimuli[0].eye",
                "missing",
            ),
            (
                lambda: client.tell(trial_id=trial.trial_id, outcome={"speed": 1.0}),
                pc.InvalidArgumentError,
                "outcomes[0].name",
                "speed",
            ),
            (lambda: client.ask(num_points=-3), pc.InvalidArgumentError, "num_points", "num_points"),
            (lambda: client.ask(num_points=100000), pc.InvalidArgumentError, "num_points", "num_points"),
            (lambda: client.ask(fixed_pars={"nope": 1.0}), pc.InvalidArgumentError, "fixed_parameters.nope", "nope"),
            (lambda: client.ask(fixed_pars={"contrast": 9.0}), pc.InvalidArgumentError, "fixed_parameters.contrast", "bounds"),
            (lambda: client.ask(ttl_seconds=-1), pc.InvalidArgumentError, "ttl_seconds", "ttl_seconds"),
            (lambda: client.get_config(section="nope"), pc.NotFoundError, "section", "nope"),
            (lambda: client.resume(config_name="nobody"), pc.NotFoundError, "name", "nobody"),
            (lambda: client.query("max"), pc.FailedPreconditionError, "strategy_id", "no model"),
        ]
        for call, error, field, words in cases:
            with pytest.raises(error) as err:
                call()
            assert err.value.field == field, (field, err.value)
            assert words in err.value.message, (words, err.value.message)
        assert event_count(db) == before
        with pytest.raises(pc.AlreadyExistsError):
            client.configure(config_str=CONFIG, config_name="dup")
            client.configure(config_str=CONFIG, config_name="dup")
        # the server keeps serving, and the pending trial can still be told
        assert client.tell(trial_id=trial.trial_id, outcome=1, strategy_id=sid).trials_recorded == 1
        assert client.info(strategy_id=sid).summary.trials_completed == 1


def test_wrong_types_on_the_wire(server: ServerThread) -> None:
    """Requests a typed client would not send: empty oneofs, wrong value kinds, garbage bytes."""
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.ExperimentServiceStub(channel)
        sid = stub.Configure(pb.ConfigureRequest(config_ini=CONFIG)).strategy_id
        bad = [
            pb.TellRequest(strategy_id=sid, outcomes=[pb.Outcome(value=1)]),  # neither trial_id nor stimuli
            pb.TellRequest(strategy_id=sid, trial_id=1),  # no outcome
            pb.AskRequest(strategy_id=sid, fixed_parameters={"shape": pb.ParameterValue(number=1.0)}),
            pb.AskRequest(strategy_id=sid, fixed_parameters={"frequency": pb.ParameterValue(category="x")}),
            pb.AskRequest(strategy_id=sid, fixed_parameters={"eye": pb.ParameterValue()}),
            pb.QueryRequest(strategy_id=sid),
        ]
        for request in bad:
            method = type(request).__name__.removesuffix("Request")
            with pytest.raises(grpc.RpcError) as err:
                getattr(stub, method)(request, timeout=5)
            assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), request
        raw = channel.unary_unary("/psyserve.v1.ExperimentService/Ask")
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xff\xff\xff", timeout=5)
        # grpc.aio itself answers an undecodable message (before any psyserve code runs) with UNKNOWN
        assert err.value.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
        assert stub.Info(pb.InfoRequest(strategy_id=sid), timeout=5).strategy_id == sid
