"""Features of one satisfaction event: the customer's recent complaints and the contact itself.

:class:`CustomerHistory` is a bounded memory of each customer's recent complaints, fed with
ticket states (:class:`stream.state.lifecycle.TicketState`) as the lifecycle stage derives them;
complaints older than the horizon expire, and past ``max_customers`` the customer updated
longest ago is evicted. :func:`features` reads it at a satisfaction event's time.

Feature names (all present in every vector, sorted, values ``float``):

- ``complaints_<category>``: number of the customer's complaints of that category created within
  ``horizon`` before the event (the followed-up ticket included); ``complaints_other`` for
  categories outside the spec.
- ``open_ticket``: 1 if any of those complaints is open (as last known).
- ``sla_breach``, ``reopen``, ``closure_<type>``: of the *linked* ticket (the one the contact
  follows up, ``event.ticket_id``); 0 for a contact not linked to a known ticket. Baseline closure:
  ``resolved``.
- ``last_handling_h``: handling time (hours, created -> closed) of the linked ticket, else of the most
  recently created closed complaint in the horizon, else 0.
- one-hot ``channel_<c>``, ``tier_<t>``, ``plan_<p>``; the baseline levels (``hotline``, ``standard``,
  and the spec's ``plan_baseline``) get no column, so they are absorbed by the intercept, and an
  unknown or missing level is treated as the baseline.

>>> from datetime import datetime, timedelta, timezone
>>> from stream.contract import SatisfactionEvent
>>> from stream.state.lifecycle import Step, fold
>>> h = lambda n: datetime(2026, 11, 20, 9, tzinfo=timezone.utc) + timedelta(hours=n)
>>> hist = CustomerHistory(horizon=timedelta(days=30))
>>> hist.update(fold("T-1", [Step("e1", h(0), "created", "CRM", "c-9", complaint_category="network",
...     sla_deadline=h(4)), Step("e2", h(6), "closed", "CRM", "c-9", closure_type="unresolved")]))
>>> hist.update(fold("T-2", [Step("e3", h(1), "created", "CRM", "c-9", complaint_category="billing",
...     sla_deadline=h(30))]))
>>> e = SatisfactionEvent.model_validate({"schema_version": 1, "event_id": "s-1", "event_time": h(7),
...     "source_system": "SURVEY", "customer_id": "c-9", "contact_id": "k-1", "channel": "app_web",
...     "region": {"province": "P01", "city": "P01-C01", "district": "P01-C01-D01"}, "overall_score": 4,
...     "ticket_id": "T-1", "customer_tier": "gold"})
>>> x = features(e, hist)
>>> list(x) == sorted(x) == list(DEFAULT_SPEC.names())
True
>>> {k: v for k, v in x.items() if v}
{'channel_app_web': 1.0, 'closure_unresolved': 1.0, 'complaints_billing': 1.0, 'complaints_network': 1.0, \
'last_handling_h': 6.0, 'open_ticket': 1.0, 'sla_breach': 1.0, 'tier_gold': 1.0}
"""

from __future__ import annotations

import math
import pickle
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from ..contract import SatisfactionEvent
from ..contract.common import Channel, CustomerTier
from ..state import packed
from ..state.lifecycle import TicketState
from ..topology import TICKET_FACTORS, FactorSet

#: the operator's complaint catalogue (docs/domain.md); others count as ``complaints_other``
CATEGORIES: tuple[str, ...] = ("billing", "installation", "network", "product", "service")
CLOSURES: tuple[str, ...] = ("resolved", "explained", "partially_resolved", "unresolved", "withdrawn")


@dataclass(frozen=True)
class FeatureSpec:
    """Which levels get a column. Baselines get none (they are the intercept)."""

    categories: tuple[str, ...] = CATEGORIES
    channels: tuple[str, ...] = tuple(c.value for c in Channel)
    channel_baseline: str | None = "hotline"
    tiers: tuple[str, ...] = tuple(t.value for t in CustomerTier)
    tier_baseline: str | None = "standard"
    plans: tuple[str, ...] = ()
    plan_baseline: str | None = None
    closures: tuple[str, ...] = CLOSURES
    closure_baseline: str | None = "resolved"
    ticket: tuple[str, ...] = TICKET_FACTORS
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _categories: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f"complaints_{c}" for c in self.categories] + ["complaints_other"]
        unknown = set(self.ticket) - set(TICKET_FACTORS)
        if unknown:
            raise ValueError(f"unknown ticket factor(s) {sorted(unknown)}; known: {list(TICKET_FACTORS)}")
        names += list(self.ticket)
        names += [f"closure_{c}" for c in self.closures if c != self.closure_baseline]
        names += [f"channel_{c}" for c in self.channels if c != self.channel_baseline]
        names += [f"tier_{t}" for t in self.tiers if t != self.tier_baseline]
        names += [f"plan_{p}" for p in self.plans if p != self.plan_baseline]
        object.__setattr__(self, "_names", tuple(sorted(set(names))))
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self._names)})
        object.__setattr__(self, "_categories", frozenset(self.categories))

    @classmethod
    def from_settings(cls, factors: FactorSet) -> FeatureSpec:
        """The factor set declared in ``topology.yaml`` (``model.factors``)."""
        return cls(
            categories=tuple(factors.complaint_categories),
            channels=tuple(factors.channels.levels),
            channel_baseline=factors.channels.baseline,
            tiers=tuple(factors.customer_tiers.levels),
            tier_baseline=factors.customer_tiers.baseline,
            plans=tuple(factors.plans.levels),
            plan_baseline=factors.plans.baseline,
            closures=tuple(factors.closure_types.levels),
            closure_baseline=factors.closure_types.baseline,
            ticket=tuple(factors.ticket),
        )

    def names(self) -> tuple[str, ...]:
        """Every feature name, sorted."""
        return self._names

    def index(self) -> dict[str, int]:
        """Feature name -> its position in :meth:`names`."""
        return self._index

    def categories_set(self) -> frozenset[str]:
        return self._categories


DEFAULT_SPEC = FeatureSpec()


@dataclass(slots=True)
class Complaint:
    """What the features need of one complaint ticket (times in epoch seconds)."""

    ticket_id: str
    category: str
    created: float
    open: bool
    sla_breached: bool
    reopened: bool
    handling_s: float | None
    closure_type: str


#: a packed complaint: created, handling seconds (NaN: none), open/breached/reopened flags, category and closure
#: codes, ticket id length; then the ticket id. A customer's complaints are packed one after the other.
_PACKED = struct.Struct("<ddBIIH")
_ID_LENGTH = struct.Struct("<H")  # the last field of the header
_OPEN, _BREACHED, _REOPENED = 1, 2, 4


def _pack(c: Complaint) -> bytes:
    tid = c.ticket_id.encode()
    flags = (_OPEN if c.open else 0) | (_BREACHED if c.sla_breached else 0) | (_REOPENED if c.reopened else 0)
    handling = math.nan if c.handling_s is None else c.handling_s
    codes = packed.CODES.codes(c.category, c.closure_type)
    return _PACKED.pack(c.created, handling, flags, *codes, len(tid)) + tid


def _unpack(blob: bytes) -> tuple[Complaint, ...]:
    out = []
    at, size, end = 0, _PACKED.size, len(blob)
    while at < end:
        created, handling, flags, category, closure, n = _PACKED.unpack_from(blob, at)
        at += size
        out.append(Complaint(
            blob[at : at + n].decode(), packed.CODES.value(category), created, bool(flags & _OPEN),
            bool(flags & _BREACHED), bool(flags & _REOPENED), None if handling != handling else handling,
            packed.CODES.value(closure),
        ))  # fmt: skip
        at += n
    return tuple(out)


def _created(blob: bytes) -> list[float]:
    """The creation times of a packed customer's complaints, read without unpacking them."""
    out = []
    at, size, end = 0, _PACKED.size, len(blob)
    while at < end:
        created, *_, n = _PACKED.unpack_from(blob, at)
        out.append(created)
        at += size + n
    return out


class CustomerHistory:
    """Recent complaints per customer, bounded in time (``horizon``) and in customers (``max_customers``).

    ``update`` takes every new state of a ticket (the latest replaces the earlier); complaints created
    more than ``horizon`` before the latest event time seen are dropped by ``expire`` (called by
    ``update`` every ``expire_every`` updates, once the latest event time has moved on by a hundredth of the
    horizon since the last time: ``expire`` scans every customer, and a million are held). A customer with no
    complaints left is forgotten; past ``max_customers`` the customer updated longest ago is evicted. Reads
    filter by the horizon themselves, so a complaint kept a little longer changes no feature.
    """

    _expired_at = float("-inf")  # the latest event time at the last expire (class default: older pickles lack it)

    def __init__(
        self, horizon: timedelta = timedelta(days=30), max_customers: int = 500_000, expire_every: int = 10_000
    ) -> None:
        if horizon <= timedelta(0) or max_customers < 1:
            raise ValueError("horizon must be positive and max_customers >= 1")
        self.horizon = horizon
        self.max_customers = max_customers
        self.expire_every = expire_every
        self.evicted = 0
        # A plain dict, in order of last update (an OrderedDict costs ~60 B more per customer). The value is
        # the customer's complaints packed into one bytes (~65 B for one, against ~120 B as objects: a million
        # customers are held).
        self._customers: dict[str, bytes] = {}
        self._watermark = float("-inf")  # latest event time seen, epoch seconds
        self._since_expire = 0

    def __len__(self) -> int:
        return len(self._customers)

    def of(self, customer_id: str) -> tuple[Complaint, ...]:
        """The customer's complaints, unpacked (give them to :meth:`complaints` and :meth:`ticket` to unpack once)."""
        held = self._customers.get(customer_id)
        return () if held is None else _unpack(held)

    def _put(self, customer_id: str, complaint: Complaint, newest: bool) -> None:
        """Add or replace (same ticket) one complaint; ``newest``: the customer moves to the end (eviction order)."""
        held = self._customers.pop(customer_id, None) if newest else self._customers.get(customer_id)
        if held is None:
            self._customers[customer_id] = _pack(complaint)
            while len(self._customers) > self.max_customers:
                del self._customers[next(iter(self._customers))]
                self.evicted += 1
            return
        tid = complaint.ticket_id.encode()
        if (len(held) == _PACKED.size + len(tid) and held.endswith(tid)
                and _ID_LENGTH.unpack_from(held, _PACKED.size - _ID_LENGTH.size)[0] == len(tid)):  # fmt: skip
            # the usual case: the customer's one complaint is this ticket, in a new state (nothing to unpack)
            self._customers[customer_id] = _pack(complaint)
            return
        # a new state of a known ticket takes its place (the order of equal creation times stays)
        kept = tuple(complaint if c.ticket_id == complaint.ticket_id else c for c in _unpack(held))
        if complaint not in kept:
            kept += (complaint,)
        self._customers[customer_id] = b"".join(map(_pack, kept))

    def update(self, state: TicketState) -> None:
        """Record the latest state of one ticket."""
        created_at = state.created_at or state.last_event_time
        if created_at is None or not state.customer_id:
            return
        c = Complaint(
            ticket_id=state.ticket_id,
            category=state.complaint_category,
            created=created_at.timestamp(),
            open=state.status != "closed",
            sla_breached=state.sla_breached,
            reopened=state.reopen_count > 0,
            handling_s=state.handling_s,
            closure_type=state.closure_type,
        )
        if state.last_event_time is not None:
            self._watermark = max(self._watermark, state.last_event_time.timestamp())
        self._put(state.customer_id, c, newest=True)
        self._since_expire += 1
        if self._since_expire >= self.expire_every:
            if self._watermark - self._expired_at >= self.horizon.total_seconds() / 100:
                self.expire()
            else:
                self._since_expire = 0

    def add(self, customer_id: str, complaint: Complaint) -> None:
        """One complaint as stored (a restart rebuilds histories from ``ticket_state``)."""
        self._watermark = max(self._watermark, complaint.created)
        self._put(customer_id, complaint, newest=False)

    def complaints(self, customer_id: str, at: datetime, held: tuple[Complaint, ...] | None = None) -> list[Complaint]:
        """The customer's complaints created within ``horizon`` before ``at`` (inclusive), oldest first."""
        held = self.of(customer_id) if held is None else held
        if not held:
            return []
        t = at.timestamp()
        lo = t - self.horizon.total_seconds()
        return sorted((c for c in held if lo <= c.created <= t), key=lambda c: c.created)

    def ticket(self, customer_id: str, ticket_id: str, held: tuple[Complaint, ...] | None = None) -> Complaint | None:
        held = self.of(customer_id) if held is None else held
        return next((c for c in held if c.ticket_id == ticket_id), None)

    def expire(self, now: datetime | None = None) -> int:
        """Drop complaints created more than ``horizon`` before ``now`` (default: the latest event seen)."""
        self._since_expire = 0
        t = now.timestamp() if now is not None else self._watermark
        self._expired_at = t
        lo = t - self.horizon.total_seconds()
        dropped = 0
        for cid, held in list(self._customers.items()):
            created = _created(held)
            if min(created) >= lo:
                continue  # the usual case: read from the packed bytes, nothing unpacked
            kept = tuple(c for c in _unpack(held) if c.created >= lo)
            dropped += len(created) - len(kept)
            if not kept:
                del self._customers[cid]
            else:
                self._customers[cid] = b"".join(map(_pack, kept))
        return dropped

    def to_bytes(self) -> bytes:
        # complaints as objects: the codes of the packed form are this process's own
        state = {**self.__dict__, "_customers": {cid: _unpack(b) for cid, b in self._customers.items()}}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> CustomerHistory:
        h = cls.__new__(cls)
        state = pickle.loads(data)
        state["_customers"] = {cid: b"".join(map(_pack, held)) for cid, held in state["_customers"].items()}
        h.__dict__.update(state)
        return h


def features(
    event: SatisfactionEvent,
    history: CustomerHistory,
    horizon: timedelta | None = None,
    spec: FeatureSpec = DEFAULT_SPEC,
) -> dict[str, float]:
    """The feature vector of ``event`` (every name of ``spec``, sorted); ``horizon`` defaults to the history's."""
    row = np.zeros(len(spec.names()))
    features_into(row, event, history, horizon, spec)
    return dict(zip(spec.names(), row.tolist(), strict=True))


def features_into(
    row: np.ndarray,
    event: SatisfactionEvent,
    history: CustomerHistory,
    horizon: timedelta | None = None,
    spec: FeatureSpec = DEFAULT_SPEC,
) -> None:
    """:func:`features` written into ``row`` (zeros, in ``spec.names()`` order): no dict per event."""
    _index = spec.index()
    at = event.event_time
    held = history.of(event.customer_id)  # unpacked once for both reads below
    recent = history.complaints(event.customer_id, at, held)
    if horizon is not None and horizon != history.horizon:
        lo = (at - horizon).timestamp()
        recent = [c for c in recent if c.created >= lo]
    if recent:
        known, other, open_at = spec.categories_set(), _index["complaints_other"], _index.get("open_ticket")
        for c in recent:
            row[_index[f"complaints_{c.category}"] if c.category in known else other] += 1.0
            if c.open and open_at is not None:
                row[open_at] = 1.0
    linked = history.ticket(event.customer_id, event.ticket_id, held) if event.ticket_id else None
    if linked is not None and linked.created < (at - (horizon or history.horizon)).timestamp():
        linked = None  # outside the horizon, even if not expired yet (expiry runs now and then: see CustomerHistory)
    if linked is not None:
        if (i := _index.get("sla_breach")) is not None:
            row[i] = float(linked.sla_breached)
        if (i := _index.get("reopen")) is not None:
            row[i] = float(linked.reopened)
        if not linked.open and (i := _index.get(f"closure_{linked.closure_type}")) is not None:
            row[i] = 1.0
    handled = (
        linked
        if linked is not None and linked.handling_s is not None
        else next((c for c in reversed(recent) if c.handling_s is not None), None)
    )
    if handled is not None and handled.handling_s is not None and (i := _index.get("last_handling_h")) is not None:
        row[i] = handled.handling_s / 3600.0
    for prefix, level in (("channel", event.channel), ("tier", event.customer_tier), ("plan", event.plan)):
        if level is not None and (i := _index.get(f"{prefix}_{level}")) is not None:
            row[i] = 1.0
