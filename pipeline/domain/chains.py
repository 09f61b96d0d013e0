"""Share chains: the ``share`` processor, keyed by share id.

Each share learns its record from its share event, and its place in its chain
(depth, root, the root's KOL) from its parent by message: a re-share registers
with its parent (:class:`ChildShareRegistered`), and a share tells its children
its position whenever that changes (:class:`ParentChainResolved`). A root share
(no parent) is resolved at depth 0 as soon as its event arrives; a share whose
ancestor is unknown, or whose parents form a cycle, stays unresolved.

Users whose clicks or purchases point at a share watch it
(:class:`ShareWatched`) and are told what it is (:class:`ShareResolved`) at
once — "not known yet" included — and at each change, until their events
leave the horizon. A click that arrives before its share is therefore not
lost: its user is told when the share arrives.

If several share events carry the same share id, the one with the smallest
(``occurred_at``, ``event_id``) is the record, whatever the arrival order.
Chains are lifetime facts, so a share event is never too late here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.contract.events import ShareEvent
from pipeline.domain.config import DomainConfig
from pipeline.domain.eventtime import NO_WATERMARK, to_us
from pipeline.domain.messages import (
    Addressed,
    ChildShareRegistered,
    ParentChainResolved,
    ProcessorName,
    ShareMessage,
    ShareResolved,
    ShareWatched,
)
from pipeline.domain.processor import StepResult
from pipeline.domain.rows import Row, ShareChainRow

_SHARE = ProcessorName.SHARE
_USER = ProcessorName.USER


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """What a share event says about its share; ``shared_at_us`` is event time (µs)."""

    event_id: str
    sharer_id: str
    parent_share_id: str | None
    kol_id: str | None
    shared_at_us: int


@dataclass(frozen=True, slots=True)
class ChainPosition:
    """A resolved share's place in its chain: depth 0 is the root."""

    depth: int
    root_share_id: str
    root_kol_id: str | None


def chain_position(
    share_id: str, record: ShareRecord, parent: ChainPosition | None
) -> ChainPosition | None:
    """The share's position from its record and its parent's position (None: unresolved)."""
    if record.parent_share_id is None:
        return ChainPosition(0, share_id, record.kol_id)
    if parent is None:
        return None
    return ChainPosition(parent.depth + 1, parent.root_share_id, parent.root_kol_id)


@dataclass(slots=True)
class ShareState:
    """State of one share id. ``watchers`` maps user id to event time (µs) watched until."""

    brand_id: str
    share_id: str
    record: ShareRecord | None = None
    parent_version: int = 0
    parent_position: ChainPosition | None = None
    position: ChainPosition | None = None
    #: Increases at every change of the record or position; orders ShareResolved messages.
    version: int = 0
    #: Re-shares registered with this share (a dict for a stable order).
    children: dict[str, None] = field(default_factory=dict)
    watchers: dict[str, int] = field(default_factory=dict)
    #: The smallest value in ``watchers`` (so expiry costs nothing until then).
    watchers_expire_us: int | None = None
    watermark_us: int = NO_WATERMARK

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        rec = self.record
        return {
            "brand_id": self.brand_id,
            "share_id": self.share_id,
            "record": None
            if rec is None
            else [rec.event_id, rec.sharer_id, rec.parent_share_id, rec.kol_id, rec.shared_at_us],
            "parent_version": self.parent_version,
            "parent_position": _pos_to_list(self.parent_position),
            "position": _pos_to_list(self.position),
            "version": self.version,
            "children": list(self.children),
            "watchers": self.watchers,
            "watchers_expire_us": self.watchers_expire_us,
            "watermark_us": self.watermark_us,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShareState:
        """Inverse of :meth:`to_dict`."""
        rec = d["record"]
        return cls(
            brand_id=d["brand_id"],
            share_id=d["share_id"],
            record=None if rec is None else ShareRecord(*rec),
            parent_version=d["parent_version"],
            parent_position=_pos_from_list(d["parent_position"]),
            position=_pos_from_list(d["position"]),
            version=d["version"],
            children=dict.fromkeys(d["children"]),
            watchers=dict(d["watchers"]),
            watchers_expire_us=d["watchers_expire_us"],
            watermark_us=d["watermark_us"],
        )


def _pos_to_list(pos: ChainPosition | None) -> list[Any] | None:
    return None if pos is None else [pos.depth, pos.root_share_id, pos.root_kol_id]


def _pos_from_list(raw: list[Any] | None) -> ChainPosition | None:
    return None if raw is None else ChainPosition(raw[0], raw[1], raw[2])


class ShareProcessor:
    """The ``share`` processor: one state per (brand, share id)."""

    name = ProcessorName.SHARE

    def __init__(self, config: DomainConfig) -> None:
        self.config = config

    def state_to_dict(self, state: ShareState) -> dict[str, Any]:
        """JSON-safe form of a state (for a changelog-backed table)."""
        return state.to_dict()

    def state_from_dict(self, d: dict[str, Any]) -> ShareState:
        """Inverse of :meth:`state_to_dict`."""
        return ShareState.from_dict(d)

    def step(
        self, state: ShareState | None, message: ShareMessage, watermark_us: int
    ) -> StepResult[ShareState]:
        """Apply one message addressed to this share at watermark ``watermark_us`` (µs).

        Idempotent: applying the same message again changes nothing (replies to
        a watcher or a child are re-sent, which their receivers ignore).
        """
        if state is None:
            state = ShareState(message.brand_id, message.share_id, watermark_us=watermark_us)
        messages: list[Addressed] = []
        rows: list[Row] = []
        self._advance(state, watermark_us)
        if isinstance(message, ShareEvent):
            self._on_share_event(state, message, messages, rows)
        elif isinstance(message, ShareWatched):
            self._on_watched(state, message, messages)
        elif isinstance(message, ChildShareRegistered):
            state.children[message.child_share_id] = None
            if state.record is not None:
                messages.append(self._to_child(state, message.child_share_id))
        else:
            self._on_parent(state, message, messages, rows)
        return StepResult(self._kept(state), messages, rows)

    def expire(self, state: ShareState, watermark_us: int) -> StepResult[ShareState]:
        """Advance the watermark: forget watchers whose events left the horizon."""
        changed = self._advance(state, watermark_us)
        return StepResult(self._kept(state), [], [], changed)

    @staticmethod
    def _kept(state: ShareState) -> ShareState | None:
        if state.record is None and not state.children and not state.watchers:
            return None
        return state

    @staticmethod
    def _advance(state: ShareState, watermark_us: int) -> bool:
        """Move the state to ``watermark_us``; False when nothing but its watermark changed."""
        if watermark_us <= state.watermark_us:
            return False
        state.watermark_us = watermark_us
        if state.watchers_expire_us is not None and state.watchers_expire_us < watermark_us:
            state.watchers = {u: t for u, t in state.watchers.items() if t >= watermark_us}
            state.watchers_expire_us = min(state.watchers.values()) if state.watchers else None
            return True
        return False

    def _on_share_event(
        self, state: ShareState, event: ShareEvent, messages: list[Addressed], rows: list[Row]
    ) -> None:
        new = ShareRecord(
            event.event_id,
            event.user_id,
            event.parent_share_id,
            event.kol_id,
            to_us(event.occurred_at),
        )
        old = state.record
        if old is not None and (old.shared_at_us, old.event_id) <= (new.shared_at_us, new.event_id):
            return
        state.record = new
        if old is None or old.parent_share_id != new.parent_share_id:
            state.parent_version = 0
            state.parent_position = None
            if new.parent_share_id is not None:
                messages.append(
                    Addressed(
                        _SHARE,
                        state.brand_id,
                        new.parent_share_id,
                        ChildShareRegistered(state.brand_id, new.parent_share_id, state.share_id),
                    )
                )
        self._refresh(state, messages, rows, record_changed=True)

    def _on_watched(
        self, state: ShareState, message: ShareWatched, messages: list[Addressed]
    ) -> None:
        if message.until_us >= state.watermark_us:
            prev = state.watchers.get(message.user_id)
            if prev is None or message.until_us > prev:
                state.watchers[message.user_id] = message.until_us
                if prev is None and (
                    state.watchers_expire_us is None or message.until_us < state.watchers_expire_us
                ):
                    state.watchers_expire_us = message.until_us
        # Always answer, "not known yet" included, so the user need not guess.
        messages.append(self._to_watcher(state, message.user_id))

    def _on_parent(
        self,
        state: ShareState,
        message: ParentChainResolved,
        messages: list[Addressed],
        rows: list[Row],
    ) -> None:
        rec = state.record
        if (
            rec is None
            or rec.parent_share_id != message.parent_share_id
            or message.version <= state.parent_version
        ):
            return
        state.parent_version = message.version
        state.parent_position = (
            None
            if message.depth is None or message.root_share_id is None
            else ChainPosition(message.depth, message.root_share_id, message.root_kol_id)
        )
        self._refresh(state, messages, rows, record_changed=False)

    def _refresh(
        self,
        state: ShareState,
        messages: list[Addressed],
        rows: list[Row],
        *,
        record_changed: bool,
    ) -> None:
        rec = state.record
        assert rec is not None
        position = chain_position(state.share_id, rec, state.parent_position)
        position_changed = position != state.position
        if not (record_changed or position_changed):
            return
        state.position = position
        state.version += 1
        rows.append(
            ShareChainRow(
                brand_id=state.brand_id,
                share_id=state.share_id,
                version=state.version,
                event_id=rec.event_id,
                sharer_id=rec.sharer_id,
                parent_share_id=rec.parent_share_id,
                kol_id=rec.kol_id,
                shared_at_us=rec.shared_at_us,
                depth=None if position is None else position.depth,
                root_share_id=None if position is None else position.root_share_id,
                root_kol_id=None if position is None else position.root_kol_id,
                resolved=position is not None,
            )
        )
        if position_changed:
            messages.extend(self._to_child(state, child) for child in state.children)
        messages.extend(self._to_watcher(state, user) for user in state.watchers)

    @staticmethod
    def _to_child(state: ShareState, child: str) -> Addressed:
        pos = state.position
        return Addressed(
            _SHARE,
            state.brand_id,
            child,
            ParentChainResolved(
                brand_id=state.brand_id,
                share_id=child,
                parent_share_id=state.share_id,
                version=state.version,
                depth=None if pos is None else pos.depth,
                root_share_id=None if pos is None else pos.root_share_id,
                root_kol_id=None if pos is None else pos.root_kol_id,
            ),
        )

    @staticmethod
    def _to_watcher(state: ShareState, user_id: str) -> Addressed:
        rec = state.record
        pos = state.position
        return Addressed(
            _USER,
            state.brand_id,
            user_id,
            ShareResolved(
                brand_id=state.brand_id,
                user_id=user_id,
                share_id=state.share_id,
                version=state.version,
                sharer_id=None if rec is None else rec.sharer_id,
                depth=None if pos is None else pos.depth,
                root_share_id=None if pos is None else pos.root_share_id,
                root_kol_id=None if pos is None else pos.root_kol_id,
            ),
        )
