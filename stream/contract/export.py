"""Export the contracts as JSON Schema files for upstream teams.

``schemas/`` is generated from the pydantic models (``cxstream schemas export``);
a test fails when the checked-in files drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import CONTRACTS

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

#: One valid example per contract, checked against the model by the tests.
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "ticket_event": [
        {
            "schema_version": 1,
            "event_id": "CRM-20261120-000123-created",
            "event_time": "2026-11-20T09:15:00+08:00",
            "source_system": "CRM",
            "customer_id": "cust-7f3a9c",
            "ticket_id": "T-20261120-000123",
            "step": "created",
            "region": {"province": "P01", "city": "P01-C02", "district": "P01-C02-D03"},
            "channel": "hotline",
            "business_line": "broadband",
            "complaint_category": "network",
            "complaint_phenomenon": "slow_speed",
            "customer_tier": "gold",
            "sla_deadline": "2026-11-21T09:15:00+08:00",
        },
        {
            "schema_version": 1,
            "event_id": "CRM-20261120-000123-closed",
            "event_time": "2026-11-20T16:40:00+08:00",
            "source_system": "CRM",
            "customer_id": "cust-7f3a9c",
            "ticket_id": "T-20261120-000123",
            "step": "closed",
            "department": "NET_OPS",
            "closure_type": "resolved",
            "problem_location": "access_network",
        },
    ],
    "satisfaction_event": [
        {
            "schema_version": 1,
            "event_id": "HOTLINE-SAT-88812",
            "event_time": "2026-11-20T17:05:00+08:00",
            "source_system": "HOTLINE",
            "customer_id": "cust-7f3a9c",
            "contact_id": "CALL-5521",
            "channel": "hotline",
            "region": {"province": "P01", "city": "P01-C02", "district": "P01-C02-D03"},
            "overall_score": 7,
            "ticket_id": "T-20261120-000123",
            "business_line": "broadband",
            "customer_tier": "gold",
            "plan": "FIBER-300",
            "dimensions": {
                "overall_service": 7,
                "reach_speed": 5,
                "ivr_menu": 6,
                "agent_attitude": 9,
                "agent_ability": 7,
                "call_outcome": 7,
            },
            "nps": 8,
            "problem_solved": True,
        }
    ],
    "subscriber_base": [
        {
            "schema_version": 1,
            "province": "P01",
            "city": "P01-C02",
            "district": "P01-C02-D03",
            "subscribers": 184000,
            "effective_from": "2026-11-01T00:00:00+08:00",
            "source_system": "BSS",
        }
    ],
    "indicator_update": [
        {
            "schema_version": 1,
            "province": "P01",
            "city": "P01-C02",
            "district": "P01-C02-D03",
            "writer": 8461923077412,
            "version": 1795571234567,
            "cells": {
                "window": ["1h", "1h"],
                "window_start": ["2026-11-20T01:00:00Z", "2026-11-20T01:00:00Z"],
                "window_end": ["2026-11-20T02:00:00Z", "2026-11-20T02:00:00Z"],
                "channel": ["hotline", "store"],
                "business_line": ["broadband", "mobile"],
                "counters": {"complaints": [4, 1], "sat_n": [11, 3], "sat_sum": [83, 25], "sat_sumsq": [651, 211]},
            },
        }
    ],
    "factor_coefficients": [
        {
            "schema_version": 1,
            "district": "P01-C02-D03",
            "province": "P01",
            "city": "P01-C02",
            "shard": "0,1,2,3,4,5",
            "as_of": "2026-11-20T09:59:58.120Z",
            "published_at": "2026-11-20T10:00:03.412Z",
            "n": 18342,
            "n_eff": 14980.4,
            "intercept": 8.31,
            "residual_sd": 1.02,
            "factors": {
                "complaints_network": {"coefficient": -1.04, "stderr": 0.03},
                "sla_breach": {"coefficient": -0.61, "stderr": 0.08},
                "tier_gold": {"coefficient": 0.02, "stderr": 0.04},
            },
        }
    ],
    "alert": [
        {
            "schema_version": 1,
            "alert_id": "6f1c2a9e0b7d4c13-1795161600",
            "fingerprint": "6f1c2a9e0b7d4c13",
            "rule": "complaint_surge",
            "status": "firing",
            "severity": "critical",
            "indicator": "complaints",
            "window": "1h",
            "scope": "district",
            "labels": {"province": "P02", "city": "P02-C02", "district": "P02-C02-D02", "team": "network-ops"},
            "comparator": ">=",
            "threshold": 80,
            "value": 98,
            "volume": 98,
            "window_start": "2026-11-20T10:00:00Z",
            "window_end": "2026-11-20T11:00:00Z",
            "since": "2026-11-20T10:00:00Z",
            "summary": "complaints 98 >= 80 in district P02-C02-D02 (1h window from 2026-11-20 10:00 UTC, volume 98)",
            "top_factors": [
                {"factor": "complaints_network", "coefficient": -1.02, "stderr": 0.04, "exposure": 0.31, "impact": -0.32}
            ],
            "links": {
                "explain": "cxstream explain P02-C02-D02 --window 1h --end 2026-11-20T11:00:00Z",
                "query": "SELECT window_start, complaints FROM cxstream.indicator_rollups WHERE level = 'district' "
                "AND district = 'P02-C02-D02' AND window = '1h' ORDER BY window_start",
                "dashboard": "http://localhost:3000/d/cx-district?var-district=P02-C02-D02",
                "runbook": "https://runbooks.example.com/cx/complaint-surge",
            },
            "evaluated_at": "2026-11-20T10:21:07.311Z",
            "trigger_arrival": "2026-11-20T10:21:06.902Z",
        }
    ],
    "supervision_event": [
        {
            "schema_version": 1,
            "ticket_id": "SV-6f1c2a9e0b7d4c13-1795161600",
            "action": "acknowledged",
            "status": "acknowledged",
            "at": "2026-11-20T10:29:40Z",
            "by": "li.wei",
            "assignee": "li.wei",
            "note": "fibre cut confirmed by NOC, crew dispatched",
            "alert_id": "6f1c2a9e0b7d4c13-1795161600",
            "fingerprint": "6f1c2a9e0b7d4c13",
            "rule": "complaint_surge",
            "alert_status": "firing",
            "time_to_ack_s": 513.0,
        }
    ],
}


def schema_for(contract: str) -> dict[str, Any]:
    model = CONTRACTS[contract]
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://cxstream.example/schemas/{contract}.v1.schema.json"
    schema["examples"] = EXAMPLES[contract]
    return schema


def rendered() -> dict[str, str]:
    """File name -> file text, exactly as checked in."""
    return {
        f"{name}.v1.schema.json": json.dumps(schema_for(name), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        for name in CONTRACTS
    }


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def drift(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that differ from the models (empty when in sync)."""
    return [name for name, text in rendered().items() if not (directory / name).exists() or (directory / name).read_text() != text]
