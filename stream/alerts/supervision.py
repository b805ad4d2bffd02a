"""Supervision tickets: the operators' closed loop behind every firing alert.

A firing alert opens one ticket (one per alert episode, whatever is redelivered). People assign,
acknowledge and close it; every change is a :class:`~stream.contract.SupervisionEvent`. A ticket closed
while its alert is still firing is flagged ``closed_while_bad``; time to acknowledge and to close are
measured from opening.

>>> from datetime import datetime, timedelta, timezone
>>> t0 = datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
>>> book = SupervisionBook()
>>> ticket, event = book.open_for("fp1-100", "fp1", "complaint_surge", "critical", "complaints 98 >= 80", {}, t0)
>>> ticket.ticket_id, ticket.status, event["action"]
('SV-fp1-100', 'open', 'opened')
>>> book.open_for("fp1-100", "fp1", "complaint_surge", "critical", "", {}, t0) is None  # once per episode
True
>>> _, e = book.acknowledge("SV-fp1-100", "li.wei", "on it", t0 + timedelta(minutes=5), "firing")
>>> e["status"], e["time_to_ack_s"]
('acknowledged', 300.0)
>>> _, e = book.close("SV-fp1-100", "li.wei", "fixed?", t0 + timedelta(minutes=9), "firing")
>>> e["closed_while_bad"], e["time_to_close_s"]
(True, 540.0)
>>> book.close("SV-fp1-100", "li.wei", "", t0, "resolved")
Traceback (most recent call last):
...
stream.alerts.supervision.SupervisionError: ticket SV-fp1-100 is already closed
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any


class SupervisionError(ValueError):
    """An unknown ticket, or a change its status does not allow."""


@dataclass(frozen=True)
class SupervisionTicket:
    ticket_id: str
    alert_id: str
    fingerprint: str
    rule: str
    severity: str
    summary: str
    province: str
    city: str
    district: str
    status: str  # open | assigned | acknowledged | closed
    assignee: str
    opened_at: datetime
    acknowledged_at: datetime | None = None
    closed_at: datetime | None = None
    closed_while_bad: bool | None = None
    time_to_ack_s: float | None = None
    time_to_close_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SupervisionBook:
    """The tickets of this worker (thread-safe: the web server and the ingest thread share it)."""

    def __init__(self) -> None:
        self._tickets: dict[str, SupervisionTicket] = {}
        self._by_alert: set[str] = set()
        self._lock = threading.Lock()

    def load(self, tickets: list[SupervisionTicket]) -> None:
        with self._lock:
            for t in tickets:
                self._tickets[t.ticket_id] = t
                self._by_alert.add(t.alert_id)

    def get(self, ticket_id: str) -> SupervisionTicket:
        t = self._tickets.get(ticket_id)
        if t is None:
            raise SupervisionError(f"no supervision ticket {ticket_id!r}; `cxstream supervision` lists them")
        return t

    def tickets(self, status: str | None = None) -> list[SupervisionTicket]:
        with self._lock:
            out = [t for t in self._tickets.values() if status in (None, t.status)]
        return sorted(out, key=lambda t: t.opened_at, reverse=True)

    def for_alert(self, fingerprint: str) -> list[SupervisionTicket]:
        return [t for t in self.tickets() if t.fingerprint == fingerprint]

    # -- changes -------------------------------------------------------------------------
    def open_for(
        self, alert_id: str, fingerprint: str, rule: str, severity: str, summary: str, labels: dict[str, str], at: datetime
    ) -> tuple[SupervisionTicket, dict] | None:
        """Open the ticket of a firing alert episode; None if it has one already."""
        with self._lock:
            if alert_id in self._by_alert:
                return None
            t = SupervisionTicket(
                ticket_id=f"SV-{alert_id}", alert_id=alert_id, fingerprint=fingerprint, rule=rule, severity=severity,
                summary=summary, province=labels.get("province", ""), city=labels.get("city", ""),
                district=labels.get("district", ""), status="open", assignee="", opened_at=at,
            )  # fmt: skip
            self._tickets[t.ticket_id] = t
            self._by_alert.add(alert_id)
        return t, self._event(t, "opened", at, "cxstream", "", "firing")

    def assign(self, ticket_id: str, assignee: str, by: str, note: str, at: datetime, alert_status: str):
        if not assignee:
            raise SupervisionError("assign needs an assignee")
        return self._change(ticket_id, "assigned", by, note, at, alert_status, assignee=assignee)

    def acknowledge(self, ticket_id: str, by: str, note: str, at: datetime, alert_status: str):
        return self._change(ticket_id, "acknowledged", by, note, at, alert_status)

    def close(self, ticket_id: str, by: str, note: str, at: datetime, alert_status: str):
        return self._change(ticket_id, "closed", by, note, at, alert_status)

    def _change(self, ticket_id: str, action: str, by: str, note: str, at: datetime, alert_status: str, assignee=None):
        if not by:
            raise SupervisionError("say who makes the change (--by)")
        with self._lock:
            t = self.get(ticket_id)
            if t.status == "closed":
                raise SupervisionError(f"ticket {ticket_id} is already closed")
            elapsed = (at - t.opened_at).total_seconds()
            if action == "assigned":
                t = replace(t, assignee=assignee, status="assigned" if t.status == "open" else t.status)
            elif action == "acknowledged":
                if t.status == "acknowledged":
                    raise SupervisionError(f"ticket {ticket_id} is already acknowledged")
                t = replace(t, status="acknowledged", acknowledged_at=at, time_to_ack_s=elapsed,
                            assignee=t.assignee or by)  # fmt: skip
            else:
                t = replace(t, status="closed", closed_at=at, time_to_close_s=elapsed,
                            closed_while_bad=alert_status in ("firing", "pending"))  # fmt: skip
            self._tickets[ticket_id] = t
        return t, self._event(t, action, at, by, note, alert_status)

    @staticmethod
    def _event(t: SupervisionTicket, action: str, at: datetime, by: str, note: str, alert_status: str) -> dict:
        return {
            "schema_version": 1, "ticket_id": t.ticket_id, "action": action, "status": t.status, "at": at, "by": by,
            "assignee": t.assignee or None, "note": note, "alert_id": t.alert_id, "fingerprint": t.fingerprint,
            "rule": t.rule, "alert_status": alert_status,
            "closed_while_bad": t.closed_while_bad if action == "closed" else None,
            "time_to_ack_s": t.time_to_ack_s if action == "acknowledged" else None,
            "time_to_close_s": t.time_to_close_s if action == "closed" else None,
        }  # fmt: skip
