"""The flexiManage envelope, free of I/O: text frame in, `Request` or `Rejected` out.

The link checks only the envelope (seq, msg.entity, msg.message, jobid) and
the shape of `get-device-info` params; the meaning of a job's params is the
handler's business. Nothing from a frame's content except a well-formed seq and
a well-formed message name is ever echoed back, so hostile or secret-bearing
input cannot be reflected into replies or logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.jobs.wirejson import loads
from agent.link.handler import DIRECT_MESSAGES, GET_DEVICE_INFO, QUERY_MESSAGES

MAX_DEPTH = 64  # JSON nesting accepted; real requests nest < 10 deep
MAX_SEQ_LEN = 128
MAX_JOBID_LEN = 64
MAX_INFO_JOBS = 1000
_MESSAGE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # exec_timeout has a "_"


@dataclass(frozen=True)
class Request:
    seq: str
    message: str
    params: Any
    jobid: str  # "" for queries; ints are normalised to their decimal text
    host_id: str | None = None
    # The msg object as received (entity, message, params as present): the
    # configuration hash chain signs exactly this.
    msg: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_direct(self) -> bool:
        """A direct message (issue 17): answered beside jobs, not journaled."""
        return not self.jobid and self.message in DIRECT_MESSAGES

    @property
    def is_job(self) -> bool:
        return self.message not in QUERY_MESSAGES and not self.is_direct


@dataclass(frozen=True)
class Rejected:
    """A frame the link refuses. `seq` is set when a reply can be addressed."""

    seq: str | None
    reason: str


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (the top level is depth 1). Level by
    level, and only containers are queued: a job is mostly scalars."""
    containers = (dict, list)  # a tuple: isinstance takes it faster than `dict | list`
    level = [value] if isinstance(value, containers) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below += [c for c in children if isinstance(c, containers)]
        level = below
    return False


def _seq_of(doc: Any) -> str | None:
    if isinstance(doc, dict):
        seq = doc.get("seq")
        if isinstance(seq, str) and 0 < len(seq) <= MAX_SEQ_LEN:
            return seq
    return None


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, loads(text)
    except (ValueError, RecursionError):
        return False, None


def _top_level_seq(text: str) -> str | None:
    """The top-level "seq" of a document too deep for json.loads (issue 15): scanned
    without recursion so the refusal can still be addressed."""
    depth, last, i, n = 0, "", 0, len(text)
    try:
        while i < n:
            ch = text[i]
            if ch == '"':
                value, end = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
                if depth == 1 and last in "{," and value == "seq":
                    j = end
                    while j < n and text[j] in " \t\r\n:":
                        j += 1
                    if j < n and text[j] == '"':
                        seq, _ = json.decoder.scanstring(text, j + 1)  # type: ignore[attr-defined]
                        return seq if isinstance(seq, str) and 0 < len(seq) <= MAX_SEQ_LEN \
                            else None
                last, i = '"', end
                continue
            if ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
            if not ch.isspace():
                last = ch
            i += 1
    except ValueError:
        return None
    return None


def parse_frame(frame: str | bytes) -> Request | Rejected:
    """Validate one incoming websocket message."""
    if isinstance(frame, bytes):
        seq = None
        try:
            ok, doc = _loads(frame.decode("utf-8"))
            seq = _seq_of(doc) if ok else None
        except UnicodeDecodeError:
            pass
        return Rejected(seq, "binary frames are not accepted: requests are JSON text frames")
    ok, doc = _loads(frame)
    if not ok:
        deep = _top_level_seq(frame)
        if deep is not None:  # valid but deeper than json.loads goes
            return Rejected(deep, f"request is not valid JSON or nests deeper than {MAX_DEPTH} "
                                  "levels")
        return Rejected(None, "request is not valid JSON")
    if not isinstance(doc, dict):
        return Rejected(None, "request must be a JSON object")
    seq = _seq_of(doc)
    if seq is None:
        return Rejected(None, f"request has no valid seq (a string of 1-{MAX_SEQ_LEN} chars)")
    if _depth_exceeds(doc, MAX_DEPTH):
        return Rejected(seq, f"request nests deeper than {MAX_DEPTH} levels")
    msg = doc.get("msg")
    if not isinstance(msg, dict):
        return Rejected(seq, "request has no msg object")
    entity, message = msg.get("entity", "agent"), msg.get("message")
    # flexiManage omits entity in one builder (modify-vxlan-config on a VXLAN port change).
    if not isinstance(entity, str):
        return Rejected(seq, "msg.entity must be a string")
    if entity != "agent":
        return Rejected(seq, "msg.entity is not supported: this device accepts entity 'agent'")
    if not isinstance(message, str) or not message:
        return Rejected(seq, "msg.message must be a non-empty string")
    if not _MESSAGE_RE.match(message):
        return Rejected(seq, "msg.message is not a known message name")
    jobid_raw = doc.get("jobid", "")
    if isinstance(jobid_raw, bool) or not isinstance(jobid_raw, int | str):
        return Rejected(seq, "jobid must be an integer or a string")
    jobid = str(jobid_raw)
    if len(jobid) > MAX_JOBID_LEN:
        return Rejected(seq, f"jobid is longer than {MAX_JOBID_LEN} characters")
    host_id = doc.get("hostId")
    params = msg.get("params")
    if message in QUERY_MESSAGES:
        if message == GET_DEVICE_INFO and info_job_ids(params) is None:
            return Rejected(
                seq,
                f"get-device-info params must be an object whose 'jobs' is a list of at most "
                f"{MAX_INFO_JOBS} job ids",
            )
    elif not jobid and message not in DIRECT_MESSAGES:
        return Rejected(seq, f"'{message}' is not supported without a jobid")
    return Request(
        seq=seq,
        message=message,
        params=params,
        jobid=jobid,
        host_id=host_id if isinstance(host_id, str) else None,
        msg=msg,
    )


def info_job_ids(params: Any) -> list[int | str] | None:
    """Job ids listed in get-device-info params, or None when malformed."""
    if params is None:
        return []
    if not isinstance(params, dict):
        return None
    jobs = params.get("jobs", [])
    if jobs is None:
        return []
    if not isinstance(jobs, list) or len(jobs) > MAX_INFO_JOBS:
        return None
    for j in jobs:
        if isinstance(j, bool) or not isinstance(j, int | str) or len(str(j)) > MAX_JOBID_LEN:
            return None
    return list(jobs)


def encode_reply(seq: str, ok: bool, message: Any, cfg_hash: str,
                 entity: str = "agentReply") -> str:
    """The reply frame; raises TypeError/ValueError if `message` is not JSON-serialisable.

    `router-cfg-hash` sits next to `ok` in every ok:1 reply and is left out of
    failure replies, as flexiagent does (flexiManage reads it only on success);
    `entity` is "agentReply", or "osReply" for exec_timeout, as flexiagent sets it."""
    msg: dict[str, Any] = {"ok": 1 if ok else 0, "message": message, "entity": entity}
    if ok:
        msg["router-cfg-hash"] = cfg_hash
    return json.dumps({"seq": seq, "msg": msg}, allow_nan=False)
