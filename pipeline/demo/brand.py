"""A believable demo brand: a month of a beauty brand's KOL campaigns and WeChat groups.

``make demo`` needs traffic whose answers are worth looking at: a few KOLs that bring
most of the visitors, shares that cascade through WeChat groups, a handful of
customers who become KOCs, loyal repeat buyers and an evening rush. This module
simulates that, seeded, so the same :class:`BrandParams` always give the same events
with the same ids, and the answers can be recomputed from them (see
:mod:`pipeline.demo.answers`).

The model, in event time (the brand's local time is UTC+8):

- **KOLs** have a follower reach drawn from a Pareto distribution, so a few of them
  bring most of the traffic. Each publishes one to three posts, mostly around
  lunch or in the evening, more of them in the run-up to the shopping festival
  (``peak_day``). Visits to a post decay over the hours after it went up.
- **Visits** (sessions) start with a click on their entry: a KOL post
  (``kol_post``, with ``kol_id`` and ``campaign_id``), a share card in a WeChat group
  (``wechat_group``, with ``share_id``), or the brand's own channels
  (``mini_program``, ``app``, ``official_account``; ``sms`` for win-back messages).
  ``channel`` is the session's entry, as a mini-program's scene value is, so the
  purchase of a session carries the channel that brought it.
- **Shares**: after a visit (more often after buying) a user may share the product
  to one of their WeChat groups; some members click the card, and some of them
  re-share it (``parent_share_id``), less likely at every level, so chains have
  depth. A few users are eager sharers: they are the ones who become KOCs.
- **Purchases** are baskets from a price list in CNY, with the usual "299 minus 30"
  coupon. Buyers may come back days later (loyal buyers come back often), and on
  the festival day people buy more.
- **Time of day**: every visit time is thinned by an hourly profile with an evening
  peak (21:00) and a night trough (04:00).

What is sent (:attr:`DemoBrand.arrival`) adds a few duplicates and an arrival order
that lags event time by up to ``max_delay_s`` (phones that were offline), below the
allowed lateness of the domain core; optionally a few malformed inputs
(:attr:`DemoBrand.malformed`) with the reason the pipeline must give them.
Event times are whole seconds, which ClickHouse's ``DateTime`` keeps exactly.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import math
import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from pipeline.contract.events import (
    AnyEvent,
    ClickEvent,
    PurchaseEvent,
    RejectReason,
    ShareEvent,
    encode_event,
)
from pipeline.domain.config import DomainConfig

Event = AnyEvent

#: The brand's local time zone (China Standard Time).
CST = dt.timezone(dt.timedelta(hours=8), "UTC+8")
_CST_OFFSET_S = 8 * 3600
DAY_S = 86_400

#: Relative activity per local hour (0..23): a lunch bump, an evening peak at 21:00,
#: and a night trough at 04:00.
HOURLY_PROFILE: tuple[float, ...] = (
    0.55, 0.35, 0.2, 0.12, 0.08, 0.1, 0.25, 0.5, 0.7, 0.8, 0.9, 1.0,
    1.25, 1.05, 0.85, 0.85, 0.9, 1.0, 1.2, 1.5, 1.85, 2.0, 1.65, 1.05,
)  # fmt: skip
PEAK_HOUR = max(range(24), key=HOURLY_PROFILE.__getitem__)
TROUGH_HOUR = min(range(24), key=HOURLY_PROFILE.__getitem__)
_PROFILE_MAX = max(HOURLY_PROFILE)

#: Largest reach of a KOL relative to the smallest (a 10-million account next to 10,000).
MAX_KOL_REACH = 1000.0

#: The catalogue: (product id, price in CNY, relative popularity).
PRICE_LIST: tuple[tuple[str, Decimal, float], ...] = (
    ("hydra-serum-30ml", Decimal("299.00"), 3.0),
    ("rose-essence-150ml", Decimal("189.00"), 2.5),
    ("sheet-mask-5pc", Decimal("79.90"), 4.0),
    ("daily-sunscreen-50ml", Decimal("139.00"), 3.0),
    ("amino-cleanser-120g", Decimal("89.00"), 3.0),
    ("peptide-eye-cream-15g", Decimal("259.00"), 1.5),
    ("night-repair-cream-50g", Decimal("329.00"), 1.5),
    ("festival-gift-set", Decimal("599.00"), 0.8),
    ("travel-kit", Decimal("49.90"), 2.0),
)
#: Orders of at least this get the coupon (most of the time).
COUPON_THRESHOLD = Decimal("299.00")
COUPON = Decimal("30.00")

_KOL_SYLLABLES = (
    ("xiao", "a", "da", "mei", "tang", "qiu", "chen", "lin", "su", "jiang", "bai", "yun"),
    ("yu", "mei", "lin", "jie", "mo", "na", "qi", "xue", "yan", "ting", "ke", "lu"),
)

# Probabilities of the visit model (per visit unless said otherwise).
_BUY_KOL = 0.05
_BUY_SHARE = 0.12
_BUY_ORGANIC = 0.07
_BUY_RETURN = 0.55
_FESTIVAL_BUY_BOOST = 2.0
_BROWSE_MORE = 0.35
_CHECKOUT_THROUGH_SHARE = 0.6
_SHARE_AFTER_PURCHASE_BOOST = 2.5
_RESHARE_DECAY = 0.6
_GROUP_CLICK = 0.05
_SELF_CLICK = 0.05
_RETURN_CHANNELS = (("mini_program", "app", "official_account", "sms"), (5.0, 3.0, 1.5, 1.0))
_ORGANIC_CHANNELS = (("mini_program", "app", "official_account"), (5.0, 3.0, 2.0))
_PRODUCTS = [name for name, _, _ in PRICE_LIST]
_PRODUCT_WEIGHTS = [weight for _, _, weight in PRICE_LIST]
_PRICES = {name: price for name, price, _ in PRICE_LIST}


@dataclass(frozen=True, slots=True)
class BrandParams:
    """What to simulate; the defaults give a few tens of thousands of events.

    ``users`` is the brand's audience (not everyone shows up); ``kols`` the KOLs it
    pays; ``days`` of traffic from ``start`` (an aware datetime, whole seconds).
    ``kol_reach_alpha`` is the Pareto shape of KOL reach: smaller is more unequal.
    ``kol_visits_per_user`` and ``organic_visits_per_user`` set the volume of visits
    from KOL posts and from the brand's own channels. ``eager_sharers`` is the share
    of users who share a lot. ``peak_day`` is the shopping festival (local date) or
    None. ``duplicate_rate``, ``max_delay_s``: see :attr:`DemoBrand.arrival`;
    ``malformed_rate``: malformed inputs per valid event.
    """

    brand_id: str = "qingyu-beauty"
    users: int = 8000
    kols: int = 40
    days: int = 28
    seed: int = 7
    start: dt.datetime = dt.datetime(2026, 10, 26, tzinfo=CST)
    kol_reach_alpha: float = 1.0
    kol_visits_per_user: float = 1.5
    organic_visits_per_user: float = 0.8
    eager_sharers: float = 0.04
    group_size: int = 120
    peak_day: dt.date | None = dt.date(2026, 11, 11)
    duplicate_rate: float = 0.01
    max_delay_s: int = 3600
    malformed_rate: float = 0.002

    def __post_init__(self) -> None:
        lateness = DomainConfig().allowed_lateness_s
        problems = []
        if not 1 <= len(self.brand_id) <= 64:
            problems.append("brand_id must have 1 to 64 characters")
        if self.users < 10:
            problems.append(f"users must be >= 10, got {self.users}")
        if self.kols < 1:
            problems.append(f"kols must be >= 1, got {self.kols}")
        if self.days < 1:
            problems.append(f"days must be >= 1, got {self.days}")
        if self.start.tzinfo is None or self.start.microsecond:
            problems.append("start must be timezone-aware and in whole seconds")
        if self.kol_reach_alpha <= 0:
            problems.append(f"kol_reach_alpha must be > 0, got {self.kol_reach_alpha}")
        if self.kol_visits_per_user < 0 or self.organic_visits_per_user < 0:
            problems.append("visits per user must be >= 0")
        if self.group_size < 2:
            problems.append(f"group_size must be >= 2, got {self.group_size}")
        for name in ("eager_sharers", "duplicate_rate", "malformed_rate"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if not 0 <= self.max_delay_s < lateness:
            problems.append(
                f"max_delay_s must be within [0, {lateness}) (the allowed lateness), "
                f"got {self.max_delay_s}"
            )
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def start_s(self) -> int:
        """``start`` as POSIX seconds."""
        return int(self.start.timestamp())

    @property
    def end_s(self) -> int:
        """End of the simulated period (exclusive), POSIX seconds."""
        return self.start_s + self.days * DAY_S


@dataclass(frozen=True, slots=True)
class KolPost:
    """One post of a KOL: when it went up, for which campaign, about which product."""

    kol_id: str
    posted_at_s: int
    campaign_id: str
    product_id: str


@dataclass(frozen=True, slots=True)
class Kol:
    """A KOL the brand works with; ``reach`` is relative (Pareto, from 1 to ``MAX_KOL_REACH``)."""

    kol_id: str
    reach: float
    posts: tuple[KolPost, ...]


@dataclass(frozen=True, slots=True)
class MalformedInput:
    """One bad message (the exact bytes to send) and the reason it must be rejected with."""

    payload: bytes
    reason: RejectReason
    what: str


@dataclass(frozen=True, slots=True)
class DemoBrand:
    """A generated brand.

    ``events``: every distinct event once, in event-time order (ties in the order
    they happened), each ``event_id`` unique. ``arrival``: what the brand's apps
    send, in sending order: ``events`` plus a few duplicates, each sent up to
    ``max_delay_s`` after it occurred. ``malformed``: bad inputs, to send as
    messages of their own.
    """

    params: BrandParams
    kols: tuple[Kol, ...]
    events: list[Event]
    arrival: list[Event]
    malformed: list[MalformedInput]


def local_hour(posix_s: int) -> int:
    """Hour of the day (0..23) in the brand's local time (UTC+8)."""
    return ((posix_s + _CST_OFFSET_S) // 3600) % 24


@dataclass(slots=True)
class _User:
    user_id: str
    buy: float
    share: float
    loyalty: float
    groups: list[int]


@dataclass(slots=True)
class _Visit:
    """A visit to play out; ``kind`` is how it started: ``kol`` (a post), ``share`` (a
    share card), ``organic``, ``return`` (a buyer coming back) or ``self`` (a sharer
    opening their own card)."""

    kind: str
    user: int
    channel: str
    product_id: str
    post: KolPost | None = None
    share_id: str | None = None
    depth: int = -1


@dataclass
class _Simulation:
    params: BrandParams
    rng: random.Random
    users: list[_User] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    kols: list[Kol] = field(default_factory=list)
    timed: list[tuple[int, int, Event]] = field(default_factory=list)
    queue: list[tuple[int, int, _Visit]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)
    order_seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    ids: set[str] = field(default_factory=set)
    #: The festival as a count of local days since the epoch (-1: none).
    peak_day_index: int = -1

    def __post_init__(self) -> None:
        if self.params.peak_day is not None:
            self.peak_day_index = (self.params.peak_day - dt.date(1970, 1, 1)).days

    # -- the cast -----------------------------------------------------------

    def new_id(self, prefix: str, bits: int) -> str:
        while True:
            candidate = f"{prefix}{self.rng.getrandbits(bits):0{bits // 4}x}"
            if candidate not in self.ids:
                self.ids.add(candidate)
                return candidate

    def cast_users(self) -> None:
        p, rng = self.params, self.rng
        n_groups = max(2, p.users // 50)
        self.groups = [[] for _ in range(n_groups)]
        for i in range(p.users):
            eager = rng.random() < p.eager_sharers
            share = rng.uniform(0.25, 0.5) if eager else rng.choice((0.005, 0.01, 0.02, 0.05))
            # Most buyers come back rarely; a loyal few come back again and again.
            loyalty = rng.uniform(0.6, 0.85) if rng.random() < 0.08 else rng.uniform(0.05, 0.3)
            n_in = rng.choices((0, 1, 2, 3), weights=(20, 45, 25, 10))[0]
            # Eager sharers run or sit in the bigger groups.
            groups = sorted({self.pick_group(n_groups, eager) for _ in range(n_in)})
            self.users.append(
                _User(self.new_id("u-", 40), rng.lognormvariate(0, 0.5), share, loyalty, groups)
            )
            for g in groups:
                self.groups[g].append(i)

    def pick_group(self, n_groups: int, eager: bool) -> int:
        # Group sizes are skewed: low group numbers are the big, lively groups.
        x = self.rng.random() ** (2.0 if eager else 1.3)
        return min(n_groups - 1, int(x * n_groups))

    def cast_kols(self) -> None:
        p, rng = self.params, self.rng
        handles = [a + b for a in _KOL_SYLLABLES[0] for b in _KOL_SYLLABLES[1]]
        rng.shuffle(handles)
        # Reach follows a Pareto law. One draw per quantile stratum (then shuffled) keeps
        # the tail's shape for a roster of a few dozen, where plain draws swing from
        # "one KOL is everything" to "all alike" with the seed.
        n = p.kols
        reaches = [
            min((1.0 - (i + rng.random()) / n) ** (-1.0 / p.kol_reach_alpha), MAX_KOL_REACH)
            for i in range(n)
        ]
        rng.shuffle(reaches)
        for i, reach in enumerate(reaches):
            handle = handles[i % len(handles)]
            kol_id = f"kol-{handle}" if i < len(handles) else f"kol-{handle}{i // len(handles)}"
            posts = []
            for _ in range(1 + (rng.random() < 0.5) + (rng.random() < 0.2)):
                at = self.post_time()
                posts.append(KolPost(kol_id, at, self.campaign(at), self.product()))
            self.kols.append(Kol(kol_id, reach, tuple(sorted(posts, key=lambda x: x.posted_at_s))))

    def post_time(self) -> int:
        p, rng = self.params, self.rng
        last_day = max(1, p.days - 2)
        while True:
            day = rng.randrange(last_day)
            start = p.start_s + day * DAY_S
            local = dt.datetime.fromtimestamp(start, CST).date()
            run_up = p.peak_day is not None and 0 <= (p.peak_day - local).days <= 10
            if run_up or rng.random() < 0.5:
                break
        # Posts go up at lunch or in the evening, local time.
        hour = rng.choices((12, 18, 19, 20, 21), weights=(2, 1, 2, 3, 2))[0]
        midnight = start - (start + _CST_OFFSET_S) % DAY_S
        return midnight + hour * 3600 + rng.randrange(3600)

    def campaign(self, at_s: int) -> str:
        peak = self.params.peak_day
        if peak is None:
            return "cmp-autumn-care"
        local = dt.datetime.fromtimestamp(at_s, CST).date()
        if local < peak:
            return f"cmp-{peak:%m%d}-presale"
        if local == peak:
            return f"cmp-{peak:%m%d}"
        return "cmp-winter-care"

    # -- time ---------------------------------------------------------------

    def visit_time(self, after_s: int, mean_delay_s: float) -> int | None:
        """A time after ``after_s``, thinned by the hourly profile; None past the end."""
        rng = self.rng
        t = after_s
        for _ in range(30):
            t = after_s + 1 + int(rng.expovariate(1.0 / mean_delay_s))
            if rng.random() * _PROFILE_MAX <= HOURLY_PROFILE[local_hour(t)]:
                break
        return t if t < self.params.end_s else None

    def any_time(self) -> int:
        """A time anywhere in the period, thinned by the hourly profile."""
        p, rng = self.params, self.rng
        while True:
            t = p.start_s + rng.randrange(p.end_s - p.start_s)
            if rng.random() * _PROFILE_MAX <= HOURLY_PROFILE[local_hour(t)]:
                return t

    def schedule(self, t: int | None, visit: _Visit) -> None:
        if t is not None and t < self.params.end_s:
            heapq.heappush(self.queue, (t, next(self.seq), visit))

    # -- events -------------------------------------------------------------

    def emit(self, t: int, event_cls: type[Event], **fields: Any) -> Event:
        event = event_cls(
            event_id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            schema_version=1,
            brand_id=self.params.brand_id,
            occurred_at=dt.datetime.fromtimestamp(t, CST),
            **fields,
        )
        self.timed.append((t, next(self.seq), event))
        return event

    def product(self) -> str:
        return self.rng.choices(_PRODUCTS, _PRODUCT_WEIGHTS)[0]

    def basket(self, first: str) -> tuple[Decimal, int]:
        """An order's amount and item count: ``first`` plus up to two more products."""
        rng = self.rng
        items = [first] + [self.product() for _ in range(rng.choices((0, 1, 2), (60, 28, 12))[0])]
        # Masks sell by the box, often several.
        total = sum(
            (_PRICES[i] * (rng.choice((1, 1, 1, 2, 3)) if "mask" in i else 1) for i in items),
            Decimal(0),
        )
        if total >= COUPON_THRESHOLD and rng.random() < 0.7:
            total -= COUPON
        return total.quantize(Decimal("0.01")), len(items)

    # -- the simulation -----------------------------------------------------

    def seed_visits(self) -> None:
        p, rng = self.params, self.rng
        n_users = len(self.users)
        activity = [rng.lognormvariate(0, 1.0) for _ in range(n_users)]
        cum_activity = list(itertools.accumulate(activity))
        posts = [post for kol in self.kols for post in kol.posts]
        post_weights = list(
            itertools.accumulate(kol.reach / len(kol.posts) for kol in self.kols for _ in kol.posts)
        )
        n_kol = round(n_users * p.kol_visits_per_user)
        chosen_posts = rng.choices(posts, cum_weights=post_weights, k=n_kol)
        visitors = rng.choices(range(n_users), cum_weights=cum_activity, k=n_kol)
        for post, user in zip(chosen_posts, visitors, strict=True):
            # Attention to a post fades over the hours after it went up.
            t = self.visit_time(post.posted_at_s, 10 * 3600)
            self.schedule(t, _Visit("kol", user, "kol_post", post.product_id, post=post))
        n_organic = round(n_users * p.organic_visits_per_user)
        for user in rng.choices(range(n_users), cum_weights=cum_activity, k=n_organic):
            channel = rng.choices(*_ORGANIC_CHANNELS)[0]
            self.schedule(self.any_time(), _Visit("organic", user, channel, self.product()))

    def run(self) -> None:
        while self.queue:
            t, _, visit = heapq.heappop(self.queue)
            self.play(t, visit)

    def play(self, t: int, v: _Visit) -> None:
        p, rng = self.params, self.rng
        user = self.users[v.user]
        post = v.post
        self.emit(
            t, ClickEvent, type="click", user_id=user.user_id, channel=v.channel,
            kol_id=post.kol_id if post else None, campaign_id=post.campaign_id if post else None,
            share_id=v.share_id, target_id=v.product_id,
        )  # fmt: skip
        if v.kind == "self":
            return  # a sharer checking their own card
        now = t
        if rng.random() < _BROWSE_MORE and now + 240 < p.end_s:
            now += rng.randint(20, 240)
            self.emit(
                now, ClickEvent, type="click", user_id=user.user_id, channel=v.channel,
                target_id=self.product(),
            )  # fmt: skip
        base = {"kol": _BUY_KOL, "share": _BUY_SHARE, "organic": _BUY_ORGANIC}.get(
            v.kind, _BUY_RETURN
        )
        if (t + _CST_OFFSET_S) // DAY_S == self.peak_day_index:
            base *= _FESTIVAL_BUY_BOOST
        bought = rng.random() < min(0.95, base * user.buy)
        if bought:
            now += rng.randint(60, 1800)
            if now >= p.end_s:
                return
            amount, n_items = self.basket(v.product_id)
            through_share = v.share_id is not None and rng.random() < _CHECKOUT_THROUGH_SHARE
            day = dt.datetime.fromtimestamp(now, CST)
            self.emit(
                now, PurchaseEvent, type="purchase", user_id=user.user_id, channel=v.channel,
                order_id=f"{day:%Y%m%d}{next(self.order_seq):07d}", amount=amount,
                currency="CNY", share_id=v.share_id if through_share else None,
                campaign_id=post.campaign_id if post else None, properties={"items": n_items},
            )  # fmt: skip
            if rng.random() < user.loyalty:
                # Coming back: a median of about five days later, through an owned channel.
                back = now + int(rng.lognormvariate(math.log(5 * DAY_S), 0.6))
                channel = rng.choices(*_RETURN_CHANNELS)[0]
                self.schedule(back, _Visit("return", v.user, channel, self.product()))
        depth = v.depth + 1 if v.share_id is not None else 0
        chance = user.share * (_SHARE_AFTER_PURCHASE_BOOST if bought else 1.0)
        if rng.random() < min(0.9, chance * _RESHARE_DECAY**depth):
            self.share(now + rng.randint(60, 1800), v, depth)

    def share(self, t: int, v: _Visit, depth: int) -> None:
        rng = self.rng
        if t >= self.params.end_s:
            return
        user = self.users[v.user]
        share_id = self.new_id("sh-", 48)
        root_kol = v.post.kol_id if v.post is not None and v.share_id is None else None
        self.emit(
            t, ShareEvent, type="share", user_id=user.user_id, channel="wechat_group",
            share_id=share_id, parent_share_id=v.share_id, kol_id=root_kol,
            target_id=v.product_id,
        )  # fmt: skip
        if rng.random() < _SELF_CLICK:
            # The sharer opens their own card to check it (never a referral).
            self.schedule(
                t + rng.randint(10, 120),
                _Visit("self", v.user, "wechat_group", v.product_id, share_id=share_id),
            )
        if user.groups:
            members = self.groups[rng.choice(user.groups)]
        else:
            # No group: the card goes to a few friends in private chats.
            members = rng.sample(range(len(self.users)), k=rng.randint(2, 8))
        for member in members:
            if member != v.user and rng.random() < _GROUP_CLICK:
                self.schedule(
                    self.visit_time(t, 3 * 3600),
                    _Visit("share", member, "wechat_group", v.product_id, share_id=share_id,
                           depth=depth),
                )  # fmt: skip


def generate(params: BrandParams | None = None) -> DemoBrand:
    """Simulate the brand described by ``params`` (defaults: :class:`BrandParams`)."""
    p = params or BrandParams()
    sim = _Simulation(p, random.Random(f"siyu-demo-brand/{p.seed}"))
    sim.cast_users()
    sim.cast_kols()
    sim.seed_visits()
    sim.run()
    sim.timed.sort(key=lambda item: (item[0], item[1]))
    events = [event for _, _, event in sim.timed]
    times = [t for t, _, _ in sim.timed]
    # Arrival and malformed inputs draw from their own streams, so asking for more or
    # fewer of them never changes the events.
    arrival = _arrival(events, times, p, random.Random(f"siyu-demo-arrival/{p.seed}"))
    malformed = _malformed(events, p, random.Random(f"siyu-demo-malformed/{p.seed}"))
    return DemoBrand(p, tuple(sim.kols), events, arrival, malformed)


def _arrival(
    events: list[Event], times: list[int], p: BrandParams, rng: random.Random
) -> list[Event]:
    """``events`` plus duplicates, each sent between 0 and ``max_delay_s`` after it occurred.

    Sorting by send time keeps every event within the allowed lateness: whatever was
    sent before an event occurred at most ``max_delay_s`` after it.
    """
    n_dup = round(len(events) * p.duplicate_rate)
    sent = list(range(len(events)))
    sent += sorted(rng.sample(range(len(events)), n_dup))
    keyed = [(times[j] + rng.randint(0, p.max_delay_s), i, events[j]) for i, j in enumerate(sent)]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [e for _, _, e in keyed]


_MALFORMED_KINDS = (
    RejectReason.INVALID_JSON,
    RejectReason.SCHEMA_VIOLATION,
    RejectReason.UNKNOWN_TYPE,
    RejectReason.SCHEMA_VIOLATION,
    RejectReason.UNSUPPORTED_SCHEMA_VERSION,
    RejectReason.NOT_AN_OBJECT,
    RejectReason.SCHEMA_VIOLATION,
)


def _malformed(events: list[Event], p: BrandParams, rng: random.Random) -> list[MalformedInput]:
    """Believable mistakes of brand apps, each derived from a real event under a new id."""
    if not events:
        return []
    out = []
    for i in range(round(len(events) * p.malformed_rate)):
        reason = _MALFORMED_KINDS[i % len(_MALFORMED_KINDS)]
        source = rng.choice(events)
        obj: dict[str, Any] = orjson.loads(encode_event(source))
        obj["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if reason is RejectReason.INVALID_JSON:
            raw = orjson.dumps(obj)
            out.append(MalformedInput(raw[: len(raw) // 2], reason, "body cut off mid-upload"))
        elif reason is RejectReason.UNKNOWN_TYPE:
            obj["type"] = "refund"
            out.append(MalformedInput(orjson.dumps(obj), reason, "a refund, not in contract v1"))
        elif reason is RejectReason.UNSUPPORTED_SCHEMA_VERSION:
            obj["schema_version"] = 2
            out.append(MalformedInput(orjson.dumps(obj), reason, "an SDK ahead of the contract"))
        elif reason is RejectReason.NOT_AN_OBJECT:
            out.append(MalformedInput(orjson.dumps([obj]), reason, "a bare list, not an envelope"))
        else:
            what = _violate(obj, rng)
            out.append(MalformedInput(orjson.dumps(obj), reason, what))
    return out


def _violate(obj: dict[str, Any], rng: random.Random) -> str:
    """Break one field of ``obj`` the way a buggy app would; say what was broken."""
    if obj["type"] == "purchase":
        if rng.random() < 0.5:
            obj["currency"] = "RMB¥"
            return "currency is not an ISO 4217 code"
        obj["amount"] = "-" + obj["amount"]
        return "negative amount"
    if rng.random() < 0.5:
        obj["occurred_at"] = obj["occurred_at"][:19]
        return "occurred_at without a UTC offset"
    del obj["user_id"]
    return "user_id missing"
