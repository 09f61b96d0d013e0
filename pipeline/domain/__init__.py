"""The domain core: loyalty, share chains, attribution and KOC promotion.

Pure Python, no Faust, no I/O. Three keyed processors, each a step
``step(state, message, watermark_us) -> StepResult(state, messages, rows)``:

- :class:`UserProcessor` (key: user id) — loyalty and attribution;
- :class:`ShareProcessor` (key: share id) — share chains;
- :class:`SharerProcessor` (key: sharer id) — KOC promotion.

:class:`Engine` wires them in memory; the Faust topology routes the same
:class:`Addressed` messages over Kafka. See ``docs/domain.md`` for the rules.
"""

from pipeline.domain.attribution import (
    ORGANIC,
    Credit,
    CreditKind,
    Purchase,
    Touch,
    TouchKind,
    attribute_purchase,
    counts_as_touch,
)
from pipeline.domain.chains import (
    ChainPosition,
    ShareProcessor,
    ShareRecord,
    ShareState,
    chain_position,
)
from pipeline.domain.config import DomainConfig, TierRule
from pipeline.domain.engine import Engine, build_processors
from pipeline.domain.eventtime import END_OF_TIME, NO_WATERMARK, from_us, to_us
from pipeline.domain.koc import (
    Evidence,
    KocPromotion,
    Referral,
    SharerProcessor,
    SharerState,
    first_koc_promotion,
)
from pipeline.domain.loyalty import LoyaltyCounters, LoyaltyTier, loyalty_tier
from pipeline.domain.messages import (
    Addressed,
    ChildShareRegistered,
    KocStatusChanged,
    Message,
    ParentChainResolved,
    ProcessorName,
    ReferralCredited,
    ShareResolved,
    ShareWatched,
    message_from_dict,
    message_to_dict,
    route_event,
)
from pipeline.domain.processor import KeyedProcessor, StepResult
from pipeline.domain.rows import (
    ROW_TYPES,
    TOO_LATE_FOR_ATTRIBUTION,
    TOO_LATE_FOR_KOC,
    CreditRow,
    KocPromotionRow,
    LateEventRow,
    LoyaltyRow,
    Row,
    ShareChainRow,
    SharerRow,
    coalesce_snapshots,
    latest_snapshots,
    net_outcomes,
    row_from_dict,
)
from pipeline.domain.user_state import UserState
from pipeline.domain.users import UserProcessor

__all__ = [
    "END_OF_TIME",
    "NO_WATERMARK",
    "ORGANIC",
    "ROW_TYPES",
    "TOO_LATE_FOR_ATTRIBUTION",
    "TOO_LATE_FOR_KOC",
    "Addressed",
    "ChainPosition",
    "ChildShareRegistered",
    "Credit",
    "CreditKind",
    "CreditRow",
    "DomainConfig",
    "Engine",
    "Evidence",
    "KeyedProcessor",
    "KocPromotion",
    "KocPromotionRow",
    "KocStatusChanged",
    "LateEventRow",
    "LoyaltyCounters",
    "LoyaltyRow",
    "LoyaltyTier",
    "Message",
    "ParentChainResolved",
    "ProcessorName",
    "Purchase",
    "Referral",
    "ReferralCredited",
    "Row",
    "ShareChainRow",
    "ShareProcessor",
    "ShareRecord",
    "ShareResolved",
    "ShareState",
    "ShareWatched",
    "SharerProcessor",
    "SharerRow",
    "SharerState",
    "StepResult",
    "TierRule",
    "Touch",
    "TouchKind",
    "UserProcessor",
    "UserState",
    "attribute_purchase",
    "build_processors",
    "chain_position",
    "coalesce_snapshots",
    "counts_as_touch",
    "first_koc_promotion",
    "from_us",
    "latest_snapshots",
    "loyalty_tier",
    "message_from_dict",
    "message_to_dict",
    "net_outcomes",
    "route_event",
    "row_from_dict",
    "to_us",
]
