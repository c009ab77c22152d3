"""The stream-integrity property again, with the handshake's features on (encryption,
compression): whatever the network does, each direction delivers exactly what was sent.

Fewer examples than tests/properties/test_stream_integrity.py: that file covers the network;
this one checks that the features never change what arrives.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupsession.core.negotiate import Compress, Features
from dupsession.core.session import SessionState
from tests.sim.network import PathSpec
from tests.support.strategies import HORIZON, PROPERTY, integrity_simulation, networks, streams

pytestmark = pytest.mark.timeout(600)

features = st.builds(
    Features,
    encrypt=st.booleans(),
    compress=st.sampled_from(list(Compress)),
    jumbo=st.booleans(),
    echo_recv=st.booleans(),  # (without it: the ACKs and loss bound an old peer gets)
)


@settings(PROPERTY, max_examples=120)
@given(
    paths=networks(),
    client_writes=streams,
    exit_writes=streams,
    wanted=features,
    seed=st.integers(0, 2**32 - 1),
)
def test_features_never_change_the_stream(
    paths: list[PathSpec],
    client_writes: list[tuple[float, bytes]],
    exit_writes: list[tuple[float, bytes]],
    wanted: Features,
    seed: int,
) -> None:
    result = integrity_simulation(paths, seed, client_writes, exit_writes, wanted).run(HORIZON)
    why = f"{result.describe()} features={wanted} paths={paths}"
    client, exit_ = result.client, result.exit
    assert exit_.received == b"".join(data for _, data in client_writes), why
    assert client.received == b"".join(data for _, data in exit_writes), why
    assert client.state is SessionState.CLOSED and exit_.state is SessionState.CLOSED, why
