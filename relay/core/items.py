"""The wire form of a queued item (docs/API.md, "Inbox delivery")."""

from __future__ import annotations

from typing import Any

from relay.store.base import QueueItem


def item_json(item: QueueItem) -> dict[str, Any]:
    """The wire form of a queued item (docs/API.md, "Inbox delivery")."""
    out: dict[str, Any]
    if item.type == "envelope":
        out = {
            "seq": item.seq,
            "type": "envelope",
            "id": item.msg_id,
            "envelope": item.payload,
            "reminder": item.reminder,
        }
    elif item.type == "escalation":
        out = {"seq": item.seq, "type": "escalation", "id": item.msg_id, "notice": item.payload}
    else:
        out = {"seq": item.seq, "type": "receipt", "id": item.msg_id, "receipt": item.payload}
    if item.note:
        out["note"] = item.note
    return out
