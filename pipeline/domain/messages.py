"""Messages between the keyed processors.

The core is three keyed processors (see :mod:`pipeline.domain.engine`):

- ``user`` (key: user id) — loyalty, the user's recent touches and purchases,
  attribution;
- ``share`` (key: share id) — the share record and its place in its chain;
- ``sharer`` (key: sharer's user id) — referred buyers and KOC promotion.

A step never reads another key's state: it sends an :class:`Addressed`
message instead. Every message is plain data with ``to_dict``/``from_dict``
(via :func:`message_to_dict` / :func:`message_from_dict`) so the streaming
layer can carry it on a Kafka topic keyed by ``(brand_id, key)``. Messages may
be delivered in any order and more than once: each carries what the receiver
needs to apply it idempotently (a version or revision, or set semantics).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar

from pipeline.contract.events import EVENT_TYPES, AnyEvent, ShareEvent


class ProcessorName(StrEnum):
    """The keyed processors, named by the key their state is partitioned by."""

    USER = "user"
    SHARE = "share"
    SHARER = "sharer"


class _MessageBase:
    __slots__ = ()
    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form with a ``"type"`` tag."""
        names = _FIELD_NAMES.get(type(self))
        if names is None:  # dataclasses.fields() per call was a visible share of a worker
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))  # type: ignore[arg-type]
        out: dict[str, Any] = {"type": self.type}
        for name in names:
            out[name] = getattr(self, name)
        return out


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True)
class ShareWatched(_MessageBase):
    """To share ``share_id``: user ``user_id`` holds events pointing at this share.

    The share answers with :class:`ShareResolved` now (if known) and at every
    change until event time ``until_us`` (µs) has passed the watermark.
    """

    type: ClassVar[str] = "share_watched"

    brand_id: str
    share_id: str
    user_id: str
    until_us: int


@dataclass(frozen=True, slots=True)
class ChildShareRegistered(_MessageBase):
    """To share ``share_id``: ``child_share_id`` is a re-share of it."""

    type: ClassVar[str] = "child_share_registered"

    brand_id: str
    share_id: str
    child_share_id: str


@dataclass(frozen=True, slots=True)
class ParentChainResolved(_MessageBase):
    """To share ``share_id``: its parent's place in the chain, at the parent's ``version``.

    ``depth`` is the parent's depth; all three chain fields are None while the
    parent's own chain is not resolved.
    """

    type: ClassVar[str] = "parent_chain_resolved"

    brand_id: str
    share_id: str
    parent_share_id: str
    version: int
    depth: int | None
    root_share_id: str | None
    root_kol_id: str | None


@dataclass(frozen=True, slots=True)
class ShareResolved(_MessageBase):
    """To user ``user_id``: what share ``share_id`` is, at the share's ``version``.

    The reply to every :class:`ShareWatched`, and sent again at each change.
    ``sharer_id`` None (at version 0): no share event for this id has arrived
    yet. Chain fields (``depth``, ``root_share_id``, ``root_kol_id``) are None
    while the chain is not resolved.
    """

    type: ClassVar[str] = "share_resolved"

    brand_id: str
    user_id: str
    share_id: str
    version: int
    sharer_id: str | None
    depth: int | None
    root_share_id: str | None
    root_kol_id: str | None


@dataclass(frozen=True, slots=True)
class ReferralCredited(_MessageBase):
    """To sharer ``sharer_id``: purchase ``purchase_event_id`` is (``active``) or is no
    longer (not ``active``) credited to them, as of the purchase's credit ``revision``.
    """

    type: ClassVar[str] = "referral_credited"

    brand_id: str
    sharer_id: str
    purchase_event_id: str
    order_id: str
    buyer_id: str
    purchased_at_us: int
    revision: int
    active: bool


@dataclass(frozen=True, slots=True)
class KocStatusChanged(_MessageBase):
    """To user ``user_id``: they are a KOC since ``koc_since_us`` (None: not a KOC)."""

    type: ClassVar[str] = "koc_status_changed"

    brand_id: str
    user_id: str
    revision: int
    koc_since_us: int | None


InternalMessage = (
    ShareWatched
    | ChildShareRegistered
    | ParentChainResolved
    | ShareResolved
    | ReferralCredited
    | KocStatusChanged
)
Message = AnyEvent | InternalMessage
UserMessage = AnyEvent | ShareResolved | KocStatusChanged
ShareMessage = ShareEvent | ShareWatched | ChildShareRegistered | ParentChainResolved
SharerMessage = ReferralCredited

_INTERNAL: dict[str, type[InternalMessage]] = {
    cls.type: cls
    for cls in (
        ShareWatched,
        ChildShareRegistered,
        ParentChainResolved,
        ShareResolved,
        ReferralCredited,
        KocStatusChanged,
    )
}


def message_to_dict(message: Message) -> dict[str, Any]:
    """JSON-safe form of any message; events keep their contract form."""
    if isinstance(message, _MessageBase):
        return message.to_dict()
    return message.model_dump(mode="json", exclude_none=True)


def message_from_dict(d: dict[str, Any]) -> Message:
    """Inverse of :func:`message_to_dict`."""
    cls = _INTERNAL.get(d["type"])
    if cls is None:
        return EVENT_TYPES[d["type"]].model_validate(d)
    return cls(**{k: v for k, v in d.items() if k != "type"})


@dataclass(frozen=True, slots=True)
class Addressed:
    """A message for processor ``processor``, key ``(brand_id, key)``."""

    processor: ProcessorName
    brand_id: str
    key: str
    message: Message

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "processor": self.processor.value,
            "brand_id": self.brand_id,
            "key": self.key,
            "message": message_to_dict(self.message),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Addressed:
        """Inverse of :meth:`to_dict`."""
        return cls(
            processor=ProcessorName(d["processor"]),
            brand_id=d["brand_id"],
            key=d["key"],
            message=message_from_dict(d["message"]),
        )


_USER = ProcessorName.USER
_SHARE = ProcessorName.SHARE


def route_event(event: AnyEvent) -> list[Addressed]:
    """Where an ingested event goes: its user, and for a share also the share."""
    out = [Addressed(_USER, event.brand_id, event.user_id, event)]
    if isinstance(event, ShareEvent):
        out.append(Addressed(_SHARE, event.brand_id, event.share_id, event))
    return out
