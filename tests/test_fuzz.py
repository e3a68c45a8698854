"""Property test: random and boundary values at every RPC get a documented status, never a crash
or a hang; afterwards the journal replays to exactly the state the server holds."""

from __future__ import annotations

import asyncio
import math
import tempfile
from pathlib import Path

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CONFIGS, ServerThread
from psyserve.app import ServerOptions
from psyserve.journal import Journal
from psyserve.service import ExperimentService
from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb
from psyserve_client._proto.psyserve.v1 import service_pb2_grpc

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
NAMES = st.sampled_from(["contrast", "frequency", "shape", "eye", "", "nope", "é", "x" * 300])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-300, 0.001, 1.0, 16.0, 1e308])
INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.sampled_from([0, 1, 2, 16, 17, -1])
VALUES = st.one_of(
    FLOATS.map(lambda v: pb.ParameterValue(number=v)),
    INTS.map(lambda v: pb.ParameterValue(integer=v)),
    st.sampled_from(["circle", "square", "star", "", "\x00"]).map(lambda v: pb.ParameterValue(category=v)),
    st.booleans().map(lambda v: pb.ParameterValue(flag=v)),
    st.just(pb.ParameterValue()),
)
VALUE_MAPS = st.dictionaries(NAMES, VALUES, max_size=5)
SIDS = st.sampled_from([0, 1, 2, -1, 2**62]) | INTS
OUTCOMES = st.lists(st.builds(lambda n, v: pb.Outcome(name=n, value=v), st.sampled_from(["", "outcome", "other"]), FLOATS), max_size=3)
CONFIG = (CONFIGS / "sobol_manual.ini").read_text()
CONFIG_TEXT = st.sampled_from([CONFIG, "", "[common]", CONFIG.replace("min_asks = 6", "min_asks = -1")]) | st.text(max_size=200)

REQUESTS = st.one_of(
    st.builds(lambda c, n: ("Configure", pb.ConfigureRequest(config_ini=c, name=n)), CONFIG_TEXT, st.sampled_from(["", "a", "b"])),
    st.builds(lambda s: ("Resume", pb.ResumeRequest(strategy_id=s)), SIDS),
    st.builds(
        lambda s, n, f, ttl: ("Ask", pb.AskRequest(strategy_id=s, num_points=n, fixed_parameters=f, ttl_seconds=ttl)),
        SIDS,
        st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 1, 2, 1000, 1001]),
        VALUE_MAPS,
        FLOATS,
    ),
    st.builds(
        lambda s, t, o, m: ("Tell", pb.TellRequest(strategy_id=s, trial_id=t, outcomes=o, metadata=m)),
        SIDS,
        st.integers(-5, 40) | INTS,
        OUTCOMES,
        st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    ),
    st.builds(
        lambda s, v, o: ("Tell", pb.TellRequest(strategy_id=s, stimuli=pb.StimulusList(stimuli=[pb.Stimulus(values=v)]), outcomes=o)),
        SIDS,
        VALUE_MAPS,
        OUTCOMES,
    ),
    st.builds(
        lambda s, q, x, y, c: ("Query", pb.QueryRequest(strategy_id=s, query_type=q, x=[pb.Stimulus(values=x)], y=y, constraints=c)),
        SIDS,
        st.integers(-3, 7),
        VALUE_MAPS,
        FLOATS,
        VALUE_MAPS,
    ),
    st.builds(lambda s: ("Info", pb.InfoRequest(strategy_id=s)), SIDS),
    st.builds(lambda s: ("Parameters", pb.ParametersRequest(strategy_id=s)), SIDS),
    st.builds(lambda s, a, b: ("GetConfig", pb.GetConfigRequest(strategy_id=s, section=a, property=b)), SIDS, NAMES, NAMES),
    st.builds(lambda s: ("FinishStrategy", pb.FinishStrategyRequest(strategy_id=s)), SIDS),
    st.builds(lambda s, state: ("ListTrials", pb.ListTrialsRequest(strategy_id=s, state=state)), SIDS, st.integers(0, 9)),
    st.builds(lambda s, t, f: ("AbandonTrial", pb.AbandonTrialRequest(strategy_id=s, trial_id=t, failed=f)), SIDS, st.integers(-1, 40), st.booleans()),
)


def test_random_requests_never_break_the_server() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "fuzz.db")
        server = ServerThread(ServerOptions(port=0, db=db, models=False))
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = service_pb2_grpc.ExperimentServiceStub(channel)
                stub.Configure(pb.ConfigureRequest(config_ini=CONFIG), timeout=5)

                @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
                @given(REQUESTS)
                def one_request(item: tuple[str, object]) -> None:
                    method, request = item
                    try:
                        getattr(stub, method)(request, timeout=5)
                        code = grpc.StatusCode.OK
                    except grpc.RpcError as exc:
                        code = exc.code()
                        assert exc.details(), "an error must say what is wrong"
                    assert code in ALLOWED, (method, request, code)

                one_request()
                served = {s.strategy_id: s for s in stub.ListStrategies(pb.ListStrategiesRequest(), timeout=5).strategies}
                assert stub.Info(pb.InfoRequest(strategy_id=1), timeout=5).strategy_id == 1
        finally:
            server.stop()

        async def replay() -> dict[int, tuple[int, int, int]]:
            journal = await Journal.open(db)
            service = ExperimentService(journal)
            await service.recover(expire_leases=False, load_all=True)  # every event replayed, not the stored summaries
            counts = {v.strategy_id: (v.trials_asked, v.trials_completed, v.trials_pending) for v in service.list_strategies()}
            await service.close()
            return counts

        replayed = asyncio.run(replay())
        assert replayed == {sid: (s.trials_asked, s.trials_completed, s.trials_pending) for sid, s in served.items()}
        assert all(math.isfinite(float(x)) for counts in replayed.values() for x in counts)
