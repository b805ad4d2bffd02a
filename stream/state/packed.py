"""A ticket's record at rest, packed into one ``bytes`` (about 150 B instead of about 470 B of objects).

A worker holds every open ticket of its partitions: a million customers are a million records, and most of
them sit untouched between two of their events. Unpacked, a one-step ticket costs a :class:`TicketRecord`, its
list, a 17-field :class:`Step`, the event id string and two datetimes. Packed, it is one bytes object:

- a fixed header the store reads without unpacking (closed?, SLA deadline, last event time, partition), so the
  SLA heap and the eviction scan stay cheap;
- per step, its times as integer microseconds and its categorical fields (step, source system, department,
  region, channel, ...) as codes into one table per process, then the event and customer ids as UTF-8;
- per follow-up, likewise.

Times come back in UTC: the same instants, so folds, comparisons and hashes are unchanged (a naive time is taken
as UTC, as the sink does).

>>> from datetime import datetime, timedelta, timezone
>>> from stream.state.lifecycle import FollowUp, Step, TicketRecord
>>> t = datetime(2026, 11, 20, 9, tzinfo=timezone(timedelta(hours=8)))
>>> r = TicketRecord(partition=3)
>>> r.add_step(Step("e1", t, "created", "HOTLINE", "c-9", sla_deadline=t + timedelta(days=2), district="D01"))
True
>>> r.add_followup(FollowUp("s1", t + timedelta(hours=1), 9, True, 10, "hotline", "SURVEY", "c-9"))
True
>>> blob = pack(r)
>>> len(blob) < 160, is_closed(blob), partition(blob), deadline(blob) == t + timedelta(days=2)
(True, False, 3, True)
>>> back = unpack(blob)
>>> back.steps == r.steps, back.followups == r.followups, back.partition
(True, True, 3)
>>> back.state("T-1") == r.state("T-1")
True
"""

from __future__ import annotations

import struct
import threading
from datetime import datetime, timedelta, timezone

from .lifecycle import FollowUp, Step, TicketRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
NO_TIME = -(1 << 63)  # no time (an absent SLA deadline)

#: closed flag, partition (-1: none), step and follow-up counts, SLA deadline, last event time
HEADER = struct.Struct("<BiIIqq")
#: event time, SLA deadline, 13 codes, event id and customer id lengths
_STEP = struct.Struct("<qq13IHH")
#: event time, score, solved (-1 unknown), NPS (-1 none), reach speed (-1 none), channel and source codes, id lengths
_FOLLOWUP = struct.Struct("<qbbbbIIHH")

class CodeTable:
    """Values that repeat across millions of records, each stored once: a record holds its code instead.

    One table per process and kind of value; it only grows, by distinct values. Code 0 is None. A new value takes
    its code under a lock: two workers in one process may meet it at once.

    >>> t = CodeTable()
    >>> t.codes("hotline", None, "hotline"), t.value(1)
    ([1, 0, 1], 'hotline')
    """

    def __init__(self) -> None:
        self._values: list = [None]
        self._code_of: dict = {None: 0}
        self._known = self._code_of.get
        self._new = threading.Lock()

    def code(self, value) -> int:
        code = self._known(value)
        if code is None:
            with self._new:
                code = self._known(value)
                if code is None:
                    self._values.append(value)
                    code = self._code_of[value] = len(self._values) - 1
        return code

    def codes(self, *values) -> list[int]:
        codes = list(map(self._known, values))  # one C loop: the usual case, every value known
        return codes if None not in codes else [self.code(v) for v in values]

    def value(self, code: int):
        return self._values[code]


#: the categorical strings of steps and follow-ups (codes, regions, departments ...)
CODES = CodeTable()


def micros(t: datetime | None) -> int:
    if t is None:
        return NO_TIME
    return (t - (_NAIVE_EPOCH if t.tzinfo is None else _EPOCH)) // _US


def moment(us: int) -> datetime | None:
    # the contract keeps times within 1900-2299 (stream.contract.common.TIME_RANGE), well inside datetime's range
    return None if us == NO_TIME else _EPOCH + timedelta(microseconds=us)


def _small(v: int | None) -> int:
    return -1 if v is None else v


def pack(rec: TicketRecord) -> bytes:
    """The record as one bytes object (see the module's doc).

    The steps it was unpacked with, still first and in order (a new step usually comes last), are copied from
    those bytes rather than packed again.
    """
    parts = [b""]
    steps = rec.steps
    reused = 0
    if rec.origin is not None:
        blob, known, ends = rec.origin
        n = min(len(known), len(steps))
        while reused < n and steps[reused] is known[reused]:
            reused += 1
        if reused:
            parts.append(blob[HEADER.size : ends[reused - 1]])
        steps = steps[reused:]
    for s in steps:
        eid, cust = s.event_id.encode(), s.customer_id.encode()
        parts.append(_STEP.pack(
            micros(s.event_time), micros(s.sla_deadline), *CODES.codes(
                s.step, s.source_system, s.department, s.closure_type, s.province, s.city, s.district, s.channel,
                s.business_line, s.complaint_category, s.complaint_phenomenon, s.customer_tier, s.problem_location,
            ), len(eid), len(cust),
        ))  # fmt: skip
        parts += (eid, cust)
    for f in rec.followups:
        eid, cust = f.event_id.encode(), f.customer_id.encode()
        solved = -1 if f.problem_solved is None else int(f.problem_solved)
        parts.append(_FOLLOWUP.pack(micros(f.event_time), f.overall_score, solved, _small(f.nps), _small(f.reach_speed),
                                    *CODES.codes(f.channel, f.source_system), len(eid), len(cust)))  # fmt: skip
        parts += (eid, cust)
    last = rec.last_event_time()
    parts[0] = HEADER.pack(rec.is_closed(), _small(rec.partition), len(rec.steps), len(rec.followups),
                            micros(rec.sla_deadline()), micros(last))  # fmt: skip
    return b"".join(parts)


def pack_step_row(row: tuple) -> tuple[str, bytes]:
    """A stored step of a ticket with no other step known yet, packed straight from its ``ticket_events`` row.

    The restore of a million open tickets packs each one this way, with no :class:`Step` or record built
    and packed again. ``row``: ticket id, event id, event time, step, source system, customer id,
    department, closure type, SLA deadline, province, city, district, channel, business line, category,
    phenomenon, tier, problem location, Kafka partition (times naive UTC, as the driver returns them; an empty
    string is no value).
    """
    (ticket_id, event_id, event_time, step, source, customer, department, closure, deadline, province, city,
     district, channel, line, category, phenomenon, tier, location, part) = row  # fmt: skip
    eid, cust = event_id.encode(), customer.encode()
    t, dl = micros(event_time), micros(deadline)
    codes = CODES.codes(step, source, department or None, closure or None, province or None, city or None,
                   district or None, channel or None, line or None, category or None, phenomenon or None,
                   tier or None, location or None)  # fmt: skip
    head = HEADER.pack(step == "closed", _small(part), 1, 0, dl, t)
    return ticket_id, b"".join((head, _STEP.pack(t, dl, *codes, len(eid), len(cust)), eid, cust))


def unpack(blob: bytes) -> TicketRecord:
    """The record back as objects, to add an event to or to fold."""
    closed, part, n_steps, n_followups, _, _ = HEADER.unpack_from(blob)
    rec = TicketRecord(None if part < 0 else part)
    at = HEADER.size
    values = CODES._values  # noqa: SLF001 (indexed per field of every step: no call each)
    steps = []
    ends = []
    for _ in range(n_steps):
        (t, dl, step, source, department, closure, province, city, district, channel, line, category, phenomenon,
         tier, location, n_eid, n_cust) = _STEP.unpack_from(blob, at)  # fmt: skip
        at += _STEP.size
        eid = blob[at : at + n_eid].decode()
        at += n_eid
        cust = blob[at : at + n_cust].decode()
        at += n_cust
        ends.append(at)
        steps.append(Step(
            eid, moment(t), values[step], values[source], cust, values[department], values[closure], moment(dl),
            values[province], values[city], values[district], values[channel], values[line], values[category],
            values[phenomenon], values[tier], values[location],
        ))  # fmt: skip
    rec.steps = steps
    rec.origin = (blob, tuple(steps), ends)
    if n_followups:
        followups = []
        for _ in range(n_followups):
            t, score, solved, nps, speed, channel, source, n_eid, n_cust = _FOLLOWUP.unpack_from(blob, at)
            at += _FOLLOWUP.size
            eid = blob[at : at + n_eid].decode()
            at += n_eid
            cust = blob[at : at + n_cust].decode()
            at += n_cust
            followups.append(FollowUp(
                eid, moment(t), score, None if solved < 0 else bool(solved), None if nps < 0 else nps, values[channel],
                values[source], cust, None if speed < 0 else speed,
            ))  # fmt: skip
        rec.followups = followups
    return rec


# -- the header, read without unpacking ------------------------------------------------
def is_closed(blob: bytes) -> bool:
    return bool(blob[0])


_PARTITION = struct.Struct("<i")  # the header's partition, after the closed flag


def partition(blob: bytes) -> int | None:
    part = _PARTITION.unpack_from(blob, 1)[0]
    return None if part < 0 else part


def header(blob: bytes) -> tuple[bool, int | None, int, int]:
    """(closed, partition, SLA deadline, last event time), times in µs (:data:`NO_TIME`: none)."""
    closed, part, _, _, deadline, last = HEADER.unpack_from(blob)
    return bool(closed), None if part < 0 else part, deadline, last


def deadline(blob: bytes) -> datetime | None:
    return moment(HEADER.unpack_from(blob)[4])


def last_event_time(blob: bytes) -> datetime | None:
    return moment(HEADER.unpack_from(blob)[5])
