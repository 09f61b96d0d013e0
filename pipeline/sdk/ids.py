"""Event ids: made once per tracked event, random or derived from a natural key.

``event_id`` is the pipeline's dedup key within a brand. Random ids (UUID4) suit events
that have no identity of their own (a click). Events that do (a purchase is one order, a
share is one share id) get a name-based UUID5 of brand, kind and key, so the same order
tracked twice, by a retry loop of the caller or after its restart, is the same event.
"""

from __future__ import annotations

import json
import uuid

#: Namespace of siyu's name-based event ids. Never change it: ids would change with it.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d3c52-8a47-4b7e-9d0c-2f5e8b1a7c39")


def new_event_id() -> str:
    """A random event id (UUID4, 122 random bits)."""
    return str(uuid.uuid4())


def event_id_for(brand_id: str, kind: str, *natural_key: str) -> str:
    """The event id of the ``kind`` event of ``brand_id`` identified by ``natural_key``
    (for example ``event_id_for("acme", "purchase", order_id)``); the same inputs give the
    same id in every process and version."""
    if not natural_key:
        raise ValueError("a natural key needs at least one part")
    # A JSON array, so no choice of parts can collide with another by concatenation.
    name = json.dumps([brand_id, kind, *natural_key], ensure_ascii=False, separators=(",", ":"))
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, name))
