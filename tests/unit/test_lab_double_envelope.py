"""The controller double sends a job's params as text made when it was queued; the frame
must be exactly what serialising the whole envelope gives."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.lab.controller_double import envelope_text

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(seq=st.text(), host=st.text(), message=st.text(), params=st.none() | _json,
       jobid=st.integers() | st.text())
def test_envelope_text_is_the_serialised_envelope(seq: str, host: str, message: str,
                                                  params: Any, jobid: int | str) -> None:
    msg: dict[str, Any] = {"entity": "agent", "message": message}
    if params is not None:
        msg["params"] = params
    expected = json.dumps({"seq": seq, "hostId": host, "msg": msg, "jobid": jobid})
    text = None if params is None else json.dumps(params)
    assert envelope_text(seq, host, message, text, jobid) == expected
