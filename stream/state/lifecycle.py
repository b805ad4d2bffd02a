"""The lifecycle of one complaint ticket: from the *set* of its events to its state.

Steps come from different source systems (hotline, CRM, network operations,
field tablets), late, out of order and resent. So the state is a pure function
of the set of a ticket's events: they are deduplicated by ``event_id`` and put
in journey order ``(event_time, STEP_RANK, event_id)``, and any arrival order
gives the same :class:`TicketState`. Inconsistent journeys (a close without a
creation, work after the close, ...) become :class:`Finding` rows for the
data-quality report, never exceptions.

>>> from datetime import datetime, timedelta, timezone
>>> h = lambda n: datetime(2026, 11, 20, 9, tzinfo=timezone.utc) + timedelta(hours=n)
>>> steps = [
...     Step("e3", h(5), "closed", "CRM", "c-9", closure_type="resolved"),
...     Step("e1", h(0), "created", "HOTLINE", "c-9", sla_deadline=h(8), district="P01-C01-D01"),
...     Step("e2", h(1), "dispatched", "CRM", "c-9", department="NET_OPS"),
... ]
>>> s = fold("T-1", steps)
>>> s.status, s.holder_department, s.handling_s, s.first_contact_resolution, s.sla_breach
('closed', 'NET_OPS', 18000.0, True, '')
>>> s == fold("T-1", list(reversed(steps)) + steps)  # any arrival order, resends included
True
>>> [f.kind for f in fold("T-1", steps[:1]).findings]  # the close arrived before the creation
['close_without_create']
>>> fold("T-2", [steps[1]], clock=h(9)).sla_breach  # silent and open past its deadline
'open_overdue'
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the contract is only needed by the from_event adapters
    from stream.contract import SatisfactionEvent, TicketEvent

#: order of steps recorded at the same instant: the natural order of a journey
STEP_RANK: dict[str, int] = {"created": 0, "dispatched": 1, "worked": 2, "closed": 3, "reopened": 4, "callback": 5}
_UNKNOWN_RANK = len(STEP_RANK)  # a step name outside the contract sorts last and changes nothing

#: the data-quality findings :func:`fold` can raise about a ticket's journey
FINDING_KINDS: tuple[str, ...] = (
    "close_without_create",  # closed, but the `created` step is missing (so far)
    "missing_create",  # steps but no `created` and no close
    "step_after_close",  # dispatched/worked after a close without a reopen in between
    "time_backwards",  # a step stamped before the ticket's creation
    "reopen_without_close",  # reopened while not closed
    "callback_without_close",  # called back while not closed
    "duplicate_create",  # a second `created` event (another event_id) for the same ticket
)

OPEN, CLOSED = "open", "closed"


@dataclass(slots=True, unsafe_hash=True)  # not frozen: built per event, and frozen __init__ costs ~3x
class Step:
    """One lifecycle event, reduced to what the state needs."""

    event_id: str
    event_time: datetime
    step: str
    source_system: str
    customer_id: str
    department: str | None = None
    closure_type: str | None = None
    sla_deadline: datetime | None = None
    province: str | None = None
    city: str | None = None
    district: str | None = None
    channel: str | None = None
    business_line: str | None = None
    complaint_category: str | None = None
    complaint_phenomenon: str | None = None
    customer_tier: str | None = None
    problem_location: str | None = None

    @classmethod
    def from_event(cls, e: TicketEvent) -> "Step":
        r = e.region
        return cls(
            event_id=e.event_id,
            event_time=e.event_time,
            step=str(e.step),
            source_system=e.source_system,
            customer_id=e.customer_id,
            department=e.department,
            closure_type=None if e.closure_type is None else str(e.closure_type),
            sla_deadline=e.sla_deadline,
            province=r.province if r else None,
            city=r.city if r else None,
            district=r.district if r else None,
            channel=None if e.channel is None else str(e.channel),
            business_line=None if e.business_line is None else str(e.business_line),
            complaint_category=e.complaint_category,
            complaint_phenomenon=e.complaint_phenomenon,
            customer_tier=None if e.customer_tier is None else str(e.customer_tier),
            problem_location=e.problem_location,
        )

    @property
    def order(self) -> tuple[datetime, int, str]:
        """Journey order: event time, then the natural step order, then the id (a total order)."""
        return (self.event_time, STEP_RANK.get(self.step, _UNKNOWN_RANK), self.event_id)


@dataclass(slots=True, unsafe_hash=True)  # not frozen: built per event, and frozen __init__ costs ~3x
class FollowUp:
    """A satisfaction event that carries this ticket's id: the customer's view of the resolution."""

    event_id: str
    event_time: datetime
    overall_score: int
    problem_solved: bool | None
    nps: int | None
    channel: str
    source_system: str
    customer_id: str = ""
    reach_speed: int | None = None  # hotline dimension "speed": the customer's view of how slow it was

    @classmethod
    def from_event(cls, e: SatisfactionEvent) -> "FollowUp":
        return cls(
            event_id=e.event_id,
            event_time=e.event_time,
            overall_score=e.overall_score,
            problem_solved=e.problem_solved,
            nps=e.nps,
            channel=str(e.channel),
            source_system=e.source_system,
            customer_id=e.customer_id,
            reach_speed=e.dimensions.reach_speed if e.dimensions else None,
        )

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.event_time, self.event_id)


@dataclass(frozen=True, slots=True)
class Finding:
    """A data-quality finding about lifecycle consistency, attributed to the offending event."""

    kind: str
    event_id: str
    source_system: str
    detail: str


@dataclass(slots=True, unsafe_hash=True)  # not frozen: a frozen dataclass's __init__ costs ~3x, and this is built per event
class StepView:
    """One step of the journey with what it means, for end-to-end tracing."""

    index: int
    step: Step
    holder: str  # department holding the ticket after this step ('' if none yet)
    #: seconds until the next step; an open ticket's last step: until the clock (None without one);
    #: None for the final close (and a closed ticket's last step): nothing is held after it
    dwell_s: float | None
    #: the first step after the SLA deadline with the ticket open before or after it; or, for an open ticket
    #: found overdue only by the clock, its last step (the deadline passed while that step held it)
    sla_breach: bool


@dataclass(slots=True, unsafe_hash=True)  # not frozen: a frozen dataclass's __init__ costs ~3x, and this is built per event
class TicketState:
    """Everything indicators and tracing need about one ticket, derived from its events."""

    ticket_id: str
    customer_id: str
    # from `created` (else the first step that carries them; '' if unknown)
    province: str
    city: str
    district: str
    channel: str
    business_line: str
    complaint_category: str
    complaint_phenomenon: str
    customer_tier: str
    status: str  # 'open' | 'closed' (a reopened ticket is open again)
    created_at: datetime | None
    first_closed_at: datetime | None
    closed_at: datetime | None  # when the ticket last became closed, while it is closed
    last_event_time: datetime | None  # latest event of either stream; None only with no events at all
    holder_department: str
    departments: tuple[str, ...]  # in order of holding, consecutive repeats collapsed
    handoffs: int
    handling_s: float | None  # created -> closed_at; None while open, without created, or if stamped backwards
    sla_deadline: datetime | None  # the latest one given (by event time)
    sla_breached: bool
    sla_breach: str  # '' | 'closed_late' | 'open_overdue'
    reopen_count: int
    first_contact_resolution: bool | None
    closure_type: str  # of the latest close while closed ('' while open)
    problem_location: str
    followup: FollowUp | None  # the latest follow-up
    internally_resolved: bool | None
    customer_solved: bool | None
    perception_gap: bool | None
    steps: tuple[StepView, ...]
    findings: tuple[Finding, ...]
    version: int  # distinct events folded (steps + follow-ups)


_ATTRS = ("province", "city", "district", "channel", "business_line", "complaint_category",
          "complaint_phenomenon", "customer_tier")  # fmt: skip


def _canonical(x: Any) -> tuple:
    """A total order over all fields, so that of two *different* events resent under one id the same
    one is kept whatever the arrival order (None sorts first)."""
    return tuple((v is not None, v) for v in (getattr(x, f) for f in type(x).__slots__))


def _dedup(events: Iterable[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in events:
        old = out.get(e.event_id)
        if old is None or (old != e and _canonical(e) < _canonical(old)):
            out[e.event_id] = e
    return out


def _utc(t: datetime) -> str:
    # findings are compared as data: one rendering for equal instants, whatever the offset
    return t.astimezone(timezone.utc).isoformat()


def fold(
    ticket_id: str,
    steps: Iterable[Step],
    followups: Iterable[FollowUp] = (),
    clock: datetime | None = None,
) -> TicketState:
    """The state of ``ticket_id`` given the set of its steps and follow-ups.

    ``clock`` is "now" for the SLA of an open ticket; without it, only the events themselves tell
    how late it is (an open ticket is overdue once any event is past its deadline).
    """
    journey: list[Step] = sorted(_dedup(steps).values(), key=_step_order)
    return _fold(ticket_id, journey, list(_dedup(followups).values()), clock)


def _followup_order(f: FollowUp) -> tuple[datetime, str]:
    return (f.event_time, f.event_id)


def _step_order(s: Step) -> tuple[datetime, int, str]:
    return (s.event_time, STEP_RANK.get(s.step, _UNKNOWN_RANK), s.event_id)


def _fold(ticket_id: str, journey: list[Step], fups: list[FollowUp], clock: datetime | None) -> TicketState:
    """:func:`fold` of steps already unique and in journey order, and unique follow-ups."""
    followup = max(fups, key=_followup_order) if fups else None

    # plain loops, not next(generator): this runs for every touched ticket of every batch
    created = None
    for s in journey:
        if s.step == "created":
            created = s
            break
    deadline = None
    for s in reversed(journey):
        if s.sla_deadline is not None:
            deadline = s.sla_deadline
            break
    created_time = created.event_time if created is not None else None

    found: list[tuple[int, int, Finding]] = []  # (journey position, kind rank, finding): sorted at the end

    def find(pos: int, kind: str, s: Step, detail: str) -> None:
        found.append((pos, FINDING_KINDS.index(kind), Finding(kind, s.event_id, s.source_system, detail)))

    status = OPEN
    holder = ""
    departments: list[str] = []
    holders: list[str] = []
    open_around: list[bool] = []  # the ticket was open just before or just after the step
    reopen_count = 0
    first_close: Step | None = None
    final_close: Step | None = None  # the close that last moved the ticket from open to closed
    final_close_pos = -1
    last_close: Step | None = None  # the latest close event (a repeated close may correct the closure type)
    for pos, s in enumerate(journey):
        was_open = status == OPEN
        kind = s.step
        if created_time is not None and s.event_time < created_time:
            when = f"{kind} at {_utc(s.event_time)} precedes created at {_utc(created_time)}"
            find(pos, "time_backwards", s, when)
        if kind == "created":
            if s is not created:
                find(pos, "duplicate_create", s, f"second created event; the ticket was created by {created.event_id}")
        elif kind in ("dispatched", "worked"):
            if status == CLOSED:
                find(pos, "step_after_close", s, f"{kind} after the close {last_close.event_id} without a reopen")
        elif kind == "closed":
            if status == OPEN:
                final_close, final_close_pos = s, pos
                first_close = first_close or s
            status = CLOSED
            last_close = s
        elif kind == "reopened":
            # counted even without a close: the source says the customer came back
            reopen_count += 1
            if status == CLOSED:
                status = OPEN
            else:
                find(pos, "reopen_without_close", s, "reopened while the ticket is not closed")
        elif kind == "callback":
            if status != CLOSED:
                find(pos, "callback_without_close", s, "called back while the ticket is not closed")
        if s.department:
            holder = s.department
            if not departments or departments[-1] != holder:
                departments.append(holder)
        holders.append(holder)
        open_around.append(was_open or status == OPEN)

    if created is None and journey:
        if first_close is not None:
            at = journey.index(first_close)
            find(at, "close_without_create", first_close, "closed, but no created step is known")
        else:
            find(0, "missing_create", journey[0], f"{len(journey)} step(s) but no created step is known")

    # journey order is by event time first, so its last step is the newest (and likewise the follow-up)
    last_event_time = journey[-1].event_time if journey else None
    if followup is not None and (last_event_time is None or followup.event_time > last_event_time):
        last_event_time = followup.event_time
    closed = status == CLOSED

    # SLA: the final close decides for a closed ticket; an open one is judged against "now"
    breach = ""
    if deadline is not None:
        if closed:
            breach = "closed_late" if final_close.event_time > deadline else ""
        else:
            # "now" is the clock, but never earlier than an event already seen (a deadline implies a step)
            now = last_event_time if clock is None else max(clock, last_event_time)
            breach = "open_overdue" if now > deadline else ""
    breach_pos = -1
    if deadline is not None:
        for i, s in enumerate(journey):
            if s.event_time > deadline and open_around[i]:
                breach_pos = i
                break
        else:
            if breach == "open_overdue":
                breach_pos = len(journey) - 1  # the deadline passed during the last dwell

    views = []
    n = len(journey)
    for i, s in enumerate(journey):
        if closed and i == final_close_pos:
            dwell = None  # the journey ended here; later steps (call-backs) are not holding time
        elif i + 1 < n:
            dwell = (journey[i + 1].event_time - s.event_time).total_seconds()
        elif not closed and clock is not None and clock >= s.event_time:
            dwell = (clock - s.event_time).total_seconds()
        else:
            dwell = None
        views.append(StepView(i, s, holders[i], dwell, i == breach_pos))

    handling_s = None
    if closed and created is not None:
        d = (final_close.event_time - created.event_time).total_seconds()
        handling_s = d if d >= 0 else None  # stamped backwards: reported as a finding, not as a negative time

    # Descriptive fields from `created`, else from the first step that carries them (one pass).
    described = {}
    carriers = journey if created is None else [created, *journey]
    for a in _ATTRS:
        value = ""
        for s in carriers:
            value = getattr(s, a)
            if value:
                break
        described[a] = value or ""

    if created is not None:
        customer_id = created.customer_id
    elif journey:
        customer_id = journey[0].customer_id
    else:
        customer_id = followup.customer_id if followup else ""

    closure_type = (last_close.closure_type or "") if closed else ""
    internally_resolved = closure_type == "resolved" if closed else None
    customer_solved = followup.problem_solved if followup else None
    if internally_resolved is None or customer_solved is None:
        gap = None
    elif internally_resolved and not customer_solved:
        gap = True  # the operator counts it resolved, the customer says it is not
    elif internally_resolved == customer_solved:
        gap = False
    else:
        gap = None  # closed as not resolved, yet the customer is happy: not a gap of the kind measured

    return TicketState(
        ticket_id=ticket_id,
        customer_id=customer_id,
        **described,
        status=status,
        created_at=created.event_time if created else None,
        first_closed_at=first_close.event_time if first_close else None,
        closed_at=final_close.event_time if closed else None,
        last_event_time=last_event_time,
        holder_department=holder,
        departments=tuple(departments),
        handoffs=max(0, len(departments) - 1),
        handling_s=handling_s,
        sla_deadline=deadline,
        sla_breached=bool(breach),
        sla_breach=breach,
        reopen_count=reopen_count,
        first_contact_resolution=(
            closure_type == "resolved" and reopen_count == 0 and len(departments) <= 1 if closed else None
        ),
        closure_type=closure_type,
        problem_location=(last_close.problem_location or "") if closed else "",
        followup=followup,
        internally_resolved=internally_resolved,
        customer_solved=customer_solved,
        perception_gap=gap,
        steps=tuple(views),
        findings=tuple(f for _, _, f in sorted(found, key=lambda x: (x[0], x[1]))) if found else (),
        version=len(journey) + len(fups),
    )


class TicketRecord:
    """The per-ticket bag of events the stream keeps; :meth:`state` folds it.

    Cheap on purpose (one is held for every open ticket): two short lists, the steps kept in journey
    order, so the quick accessors agree with :func:`fold` whatever the arrival order.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    >>> r = TicketRecord()
    >>> r.add_step(Step("e1", t, "closed", "CRM", "c-9", closure_type="resolved")), r.is_closed()
    (True, True)
    >>> r.add_step(Step("e1", t, "closed", "CRM", "c-9", closure_type="resolved"))  # a resend
    False
    >>> r.state("T-1").version
    1
    """

    __slots__ = ("steps", "followups", "partition", "origin")

    def __init__(self, partition: int | None = None) -> None:
        self.steps: list[Step] = []  # unique event ids, kept in journey order (what fold needs)
        self.followups: list[FollowUp] | tuple = ()  # unique event ids; a list from the first one (most have none)
        self.partition = partition  # the source partition its events come from (a rebalance hands it over)
        self.origin: tuple | None = None  # the bytes it was unpacked from (stream.state.packed reuses them)

    def __len__(self) -> int:
        return len(self.steps) + len(self.followups)

    def add_step(self, step: Step) -> bool:
        """Add a lifecycle step; False if it changed nothing (a resend of a known event)."""
        steps = self.steps
        for i, old in enumerate(steps):  # a ticket has a handful of steps: a scan beats a dict per ticket
            if old.event_id == step.event_id:
                if old == step or _canonical(step) >= _canonical(old):
                    return False
                # a different event under a known id: keep the canonical one, as fold does
                del steps[i]
                break
        if not steps:
            self.steps = [step]  # sized for one: most open tickets have one or two steps
        elif _step_order(step) >= _step_order(steps[-1]):
            steps.append(step)  # the usual case: steps arrive in journey order
        else:
            bisect.insort(steps, step, key=_step_order)
        return True

    def add_followup(self, followup: FollowUp) -> bool:
        """Add a linked satisfaction event; False if it changed nothing."""
        fups = self.followups
        for i, old in enumerate(fups):
            if old.event_id == followup.event_id:
                if old == followup or _canonical(followup) >= _canonical(old):
                    return False
                fups[i] = followup
                return True
        if not fups:
            self.followups = [followup]
        else:
            fups.append(followup)
        return True

    def state(self, ticket_id: str, clock: datetime | None = None) -> TicketState:
        return _fold(ticket_id, self.steps, self.followups, clock)

    def is_closed(self) -> bool:
        """Closed iff the latest close/reopen in journey order is a close (what fold's status says)."""
        for s in reversed(self.steps):
            if s.step == "closed":
                return True
            if s.step == "reopened":
                return False
        return False

    def last_event_time(self) -> datetime | None:
        last = self.steps[-1].event_time if self.steps else None
        for f in self.followups:
            if last is None or f.event_time > last:
                last = f.event_time
        return last

    def sla_deadline(self) -> datetime | None:
        return next((s.sla_deadline for s in reversed(self.steps) if s.sla_deadline is not None), None)
