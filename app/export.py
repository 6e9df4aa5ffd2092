"""`tonewatch export`: a server's session turns to JSON Lines or Parquet, for pandas / DuckDB.

Reads `GET /v1/sessions/export` (NDJSON, streamed) with the same filters as the session list and writes as it reads:
constant memory for any size (Parquet in row groups of ROW_GROUP turns). The key comes from the environment
(TONEWATCH_API_KEY: a client key exports its own sessions, the admin token all of them), never from the command line.
Parquet columns: the turn's scalar fields, the tone dimensions and drift flattened to columns, and `tone`,
`latency` and `drift` as JSON text for everything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROW_GROUP = 5000
FILTERS = ("alerting", "adapter", "persona", "label", "since", "until", "order")


class ExportFailed(Exception):
    """The server refused the export or stopped it (its error message is the text)."""


def turns(client: httpx.Client, params: dict[str, Any], headers: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The exported turns, one dict per line, as the server streams them."""
    query = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items() if v is not None}
    with client.stream("GET", "/v1/sessions/export", params=query, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            raise ExportFailed(f"HTTP {response.status_code}: {response.text[:500]}")
        for line in response.iter_lines():
            if not line:
                continue
            row = json.loads(line)
            if "error" in row:  # the server's in-band error after the headers were sent
                raise ExportFailed(row["error"].get("message", "export stopped"))
            yield row


def flat(turn: dict[str, Any]) -> dict[str, Any]:
    tone, drift = turn.get("tone") or {}, turn.get("drift") or {}
    return {
        "session_id": turn["session_id"],
        "seq": turn["seq"],
        "request_id": turn["request_id"],
        "ts": turn["ts"],
        "kind": turn.get("kind"),
        "adapter": turn.get("adapter"),
        "persona": turn.get("persona"),
        "prompt": turn.get("prompt"),
        "response": turn.get("response"),
        "label": tone.get("label"),
        "formality": tone.get("formality"),
        "politeness": tone.get("politeness"),
        "warmth": tone.get("warmth"),
        "persona_distance": tone.get("persona_distance"),
        "drift_score": drift.get("score"),
        "drift_alert": drift.get("alert"),
        "drift_cusum": drift.get("cusum"),
        "finish_reason": turn.get("finish_reason"),
        "delivered": turn.get("delivered"),
        "tone": json.dumps(tone),
        "latency": json.dumps(turn.get("latency") or {}),
        "drift": json.dumps(drift) if drift else None,
    }


def _schema():
    import pyarrow as pa

    text, num, flag = pa.string(), pa.float64(), pa.bool_()
    return pa.schema(
        [
            ("session_id", text),
            ("seq", pa.int64()),
            ("request_id", text),
            ("ts", num),
            ("kind", text),
            ("adapter", text),
            ("persona", text),
            ("prompt", text),
            ("response", text),
            ("label", text),
            ("formality", num),
            ("politeness", num),
            ("warmth", num),
            ("persona_distance", num),
            ("drift_score", num),
            ("drift_alert", flag),
            ("drift_cusum", num),
            ("finish_reason", text),
            ("delivered", flag),
            ("tone", text),
            ("latency", text),
            ("drift", text),
        ]
    )


def write(rows: Iterator[dict[str, Any]], out: Path, fmt: str) -> int:
    """Write the turns to `out` as `fmt` ("jsonl" | "parquet"); the number written."""
    count = 0
    if fmt == "jsonl":
        with out.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        return count
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema()
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(flat(row))
            count += 1
            if len(batch) >= ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return count
