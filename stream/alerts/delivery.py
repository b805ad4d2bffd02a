"""Delivery of alerts to Prometheus Alertmanager (v2 API) and a generic webhook.

Routing, grouping, silences and inhibition are Alertmanager's job; this service only hands alerts
over, reliably and without holding the stream back:

- the ingest agent puts each committed batch's alerts on a bounded queue per target and goes on;
  when a queue is full the oldest alert is dropped and counted;
- each target has its own sender: an attempt that fails is retried with exponential backoff
  (``alerts.delivery.backoff``, doubling up to 30 s, ``retries`` times), then given up and counted;
- firing alerts are re-sent to Alertmanager every ``resend_interval``, as Prometheus does: Alertmanager
  resolves an alert it has not heard of for its ``resolve_timeout``.

Alertmanager gets ``firing`` and ``resolved`` alerts (labels: ``alertname`` = the rule, ``severity``,
the scope labels, the rule's labels; annotations: summary, value, threshold, since, top factors, links),
and trend warnings as ``<rule>_predicted`` with ``severity=warning``. The webhook gets every status
change as the :class:`~stream.contract.Alert` JSON document.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import aiohttp
import orjson
from mode import Service

from ..runtime import metrics
from ..topology import DeliverySettings

log = logging.getLogger("cxstream.alerts.delivery")

#: statuses Alertmanager hears about, and whether they end the alert there
_AM_STATUS = {"firing": False, "resolved": True, "predicted": False, "unpredicted": True}


def _iso(v) -> str:
    if isinstance(v, str):
        return v
    return v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def alertmanager_alert(doc: dict, now: datetime | None = None) -> dict | None:
    """The Alertmanager v2 ``postableAlert`` for an Alert document, or None for statuses it does not take."""
    status = doc["status"]
    if status not in _AM_STATUS:
        return None
    predicted = status in ("predicted", "unpredicted")
    labels = {
        "alertname": doc["rule"] + ("_predicted" if predicted else ""),
        "severity": "warning" if predicted else doc["severity"],
        "indicator": doc["indicator"],
        "window": doc["window"],
        "scope": doc["scope"],
        **doc["labels"],
    }
    factors = ", ".join(f"{f['factor']} {f['impact']:+.2f} pts" for f in doc.get("top_factors") or [])
    links = doc["links"]
    annotations = {
        "summary": doc["summary"],
        "value": "" if doc["value"] is None else f"{doc['value']:.6g}",
        "threshold": f"{doc['threshold']:g}",
        "since": _iso(doc["since"]),
        "volume": f"{doc['volume']:g}",
        "top_factors": factors,
        "explain": links["explain"],
        "query": links["query"],
        "dashboard": links.get("dashboard") or "",
        "runbook_url": links.get("runbook") or "",
        "alert_id": doc["alert_id"],
    }
    out = {
        "labels": {k: str(v) for k, v in labels.items() if v != ""},
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": _iso(doc["since"] if not predicted else doc["evaluated_at"]),
        "generatorURL": links.get("dashboard") or "http://cxstream.invalid/alerts",
    }
    if _AM_STATUS[status]:
        out["endsAt"] = _iso(now or doc["evaluated_at"])
    return out


class _Target:
    def __init__(self, name: str, url: str, queue_max: int):
        self.name, self.url = name, url
        self.queue: deque[dict] = deque()
        self.queue_max = queue_max
        self.ready = asyncio.Event()

    def put(self, item: dict) -> None:
        if len(self.queue) >= self.queue_max:
            self.queue.popleft()
            metrics.ALERT_DELIVERIES.labels(self.name, "dropped").inc()
        self.queue.append(item)
        metrics.ALERT_DELIVERY_QUEUE.labels(self.name).set(len(self.queue))
        self.ready.set()


class AlertDelivery(Service):
    """Queues and senders for Alertmanager and the webhook (either may be unset)."""

    def __init__(
        self,
        settings: DeliverySettings,
        alertmanager_url: str | None,
        webhook_url: str | None,
        active: Callable[[], list[dict]] | None = None,
        **kw,
    ) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.active = active  # the firing alerts' current documents, for re-sending
        self.targets: list[_Target] = []
        if alertmanager_url:
            self.targets.append(_Target("alertmanager", alertmanager_url.rstrip("/") + "/api/v2/alerts", settings.queue_max))
        if webhook_url:
            self.targets.append(_Target("webhook", webhook_url, settings.queue_max))
        self.delivered: dict[str, int] = {t.name: 0 for t in self.targets}
        self._session: aiohttp.ClientSession | None = None

    def submit(self, docs: list[dict]) -> None:
        """Queue alerts (never waits)."""
        for t in self.targets:
            for d in docs:
                if t.name == "alertmanager":
                    am = alertmanager_alert(d)
                    if am is not None:
                        t.put(am)
                else:
                    t.put(d)

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for t in self.targets:
            self.add_future(self._send_loop(t))
            log.info("alert delivery to %s at %s", t.name, t.url)

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, t: _Target, body: bytes) -> None:
        assert self._session is not None
        async with self._session.post(t.url, data=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status >= 300:
                text = (await resp.text())[:300]
                raise RuntimeError(f"HTTP {resp.status}: {text}")

    async def _send_loop(self, t: _Target) -> None:
        while not self.should_stop:
            if not t.queue:
                t.ready.clear()
                await t.ready.wait()
                continue
            item = t.queue[0]
            # Alertmanager takes a list; the webhook one document per request.
            body = orjson.dumps([item] if t.name == "alertmanager" else item, option=orjson.OPT_UTC_Z)
            delay = self.settings.backoff.total_seconds()
            for attempt in range(self.settings.retries + 1):
                try:
                    await self._post(t, body)
                    metrics.ALERT_DELIVERIES.labels(t.name, "delivered").inc()
                    self.delivered[t.name] += 1
                    break
                except Exception as exc:  # noqa: BLE001 (any failure is retried, never raised into the stream)
                    metrics.ALERT_DELIVERY_FAILURES.labels(t.name).inc()
                    if attempt == self.settings.retries:
                        metrics.ALERT_DELIVERIES.labels(t.name, "given_up").inc()
                        log.error("alert delivery to %s given up after %d attempts: %s", t.name, attempt + 1, exc)
                        break
                    log.warning("alert delivery to %s failed (%s); retry in %.1fs", t.name, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            if t.queue and t.queue[0] is item:
                t.queue.popleft()
            metrics.ALERT_DELIVERY_QUEUE.labels(t.name).set(len(t.queue))

    @Service.task
    async def _resend(self) -> None:
        """Firing alerts again, so Alertmanager keeps them active."""
        interval = self.settings.resend_interval.total_seconds()
        while not self.should_stop:
            await self.sleep(interval)
            if self.active is None:
                continue
            docs = [d for d in await asyncio.to_thread(self.active) if d["status"] in ("firing", "predicted")]
            for t in self.targets:
                if t.name == "alertmanager":
                    now = datetime.now(timezone.utc)
                    for d in docs:
                        am = alertmanager_alert(d, now)
                        if am is not None:
                            am["endsAt"] = _iso(now + 4 * timedelta(seconds=interval))
                            t.put(am)
