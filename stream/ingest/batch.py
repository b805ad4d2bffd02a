"""One polled batch through validation and deduplication (pure, synchronous).

>>> from stream.ingest.dedup import SeenIds
>>> from stream.contract.export import EXAMPLES
>>> import json
>>> good = json.dumps(EXAMPLES["satisfaction_event"][0]).encode()
>>> recs = [RawRecord("sat", 0, i, 0, b"k", v) for i, v in enumerate([good, good, b"{oops"])]
>>> splitter = BatchSplitter({"sat": "satisfaction_event"}, lambda: SeenIds(3600, 1000))
>>> out = splitter.split(recs)["satisfaction_event"]
>>> len(out.accepted), len(out.duplicates), [r.reason for r in out.rejected]
(1, 1, ['not_json'])
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from ..contract import CONTRACTS
from .decode import decode_batch
from .dedup import SeenIds
from .records import Accepted, IngestBatch, RawRecord


class BatchSplitter:
    """Routes records by topic to their contract, validates, drops resends."""

    def __init__(self, contract_by_topic: dict[str, str], new_seen: Callable[[], SeenIds]):
        self.contract_by_topic = contract_by_topic
        self.seen: dict[str, SeenIds] = {name: new_seen() for name in set(contract_by_topic.values())}

    def split(self, records: Iterable[RawRecord]) -> dict[str, IngestBatch]:
        by_contract: dict[str, list[RawRecord]] = defaultdict(list)
        for record in records:
            by_contract[self.contract_by_topic[record.topic]].append(record)
        out = {}
        for contract, recs in by_contract.items():
            accepted, rejected = decode_batch(recs, CONTRACTS[contract])
            fresh = self.seen[contract].add_new(a.event.event_id for a in accepted)
            out[contract] = IngestBatch(
                accepted=[a for a, new in zip(accepted, fresh) if new],
                rejected=rejected,
                duplicates=[a for a, new in zip(accepted, fresh) if not new],
            )
        return out

    def forget(self, batches: dict[str, IngestBatch]) -> None:
        """Storage failed: un-see the accepted ids so the retry stores them."""
        for contract, batch in batches.items():
            self.seen[contract].forget(a.event.event_id for a in batch.accepted)

    def warm(self, contract: str, event_ids: Iterable[str]) -> None:
        self.seen[contract].add_new(event_ids)


__all__ = ["Accepted", "BatchSplitter", "IngestBatch", "RawRecord"]
