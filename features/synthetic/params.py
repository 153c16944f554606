"""The synthetic data set's parameters and constants: vocabulary, category sizes and prices, behaviour rates, and one
random stream id per draw."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Sequence, Tuple


# name, relative catalog size, median price, nouns
CATEGORIES: Tuple[Tuple[str, float, float, Tuple[str, ...]], ...] = (
    ("kitchen", 14, 4.5, ("LUNCH BOX", "CAKE TIN", "TEA TOWEL", "MUG", "JAM JAR", "CAKE STAND", "APRON")),
    ("home decor", 13, 6.5, ("PHOTO FRAME", "WALL CLOCK", "MIRROR", "DOORSTOP", "WALL SIGN", "VASE")),
    ("garden", 7, 9.0, ("WATERING CAN", "PLANT POT", "BIRD HOUSE", "GARDEN SIGN", "PARASOL")),
    ("toys", 8, 3.5, ("SPINNING TOP", "DOLL", "SKIPPING ROPE", "JIGSAW", "PLAYING CARDS", "TEDDY BEAR")),
    ("stationery", 9, 1.8, ("NOTEBOOK", "PENCIL SET", "GIFT WRAP", "STICKER SHEET", "GREETING CARD")),
    ("party", 6, 1.5, ("PAPER CUPS", "NAPKINS", "BUNTING", "PARTY BAG", "CAKE CASES")),
    ("christmas", 7, 3.0, ("BAUBLE", "STOCKING", "ADVENT CALENDAR", "TREE DECORATION", "WREATH")),
    ("bags", 6, 4.0, ("LUNCH BAG", "JUMBO BAG", "SHOPPER", "TOTE BAG", "WASHBAG")),
    ("jewellery", 5, 5.5, ("NECKLACE", "BRACELET", "EARRINGS", "RING", "BROOCH")),
    ("lighting", 5, 8.0, ("T-LIGHT HOLDER", "LANTERN", "STRING LIGHTS", "LAMP", "NIGHT LIGHT")),
    ("bathroom", 4, 5.0, ("SOAP DISH", "TOOTHBRUSH HOLDER", "HAND TOWEL", "BATH MAT")),
    ("storage", 5, 7.0, ("STORAGE BOX", "BASKET", "TRINKET BOX", "COAT HOOK", "SHELF")),
    ("textiles", 5, 6.5, ("CUSHION COVER", "THROW", "TABLE CLOTH", "OVEN GLOVE")),
    ("pets", 3, 4.0, ("DOG BOWL", "CAT TOY", "PET BED", "LEAD")),
    ("candles", 4, 2.5, ("SCENTED CANDLE", "PILLAR CANDLE", "CANDLE POT", "TEA LIGHTS")),
    ("gifts", 5, 5.0, ("GIFT SET", "KEYRING", "MONEY BOX", "MAGNET", "SNOW GLOBE")),
)
ADJECTIVES = ("VINTAGE", "RETROSPOT", "REGENCY", "RUSTIC", "FLORAL", "POLKADOT", "HEART", "STAR",
              "SCANDINAVIAN", "ANTIQUE", "SWEETHEART", "PAISLEY", "GINGHAM", "DOILY", "JUMBO", "MINI")
COLOURS = ("RED", "BLUE", "PINK", "WHITE", "IVORY", "GREEN", "BLACK", "GOLD", "SILVER",
           "WOODEN", "CERAMIC", "GLASS", "ENAMEL", "ZINC", "WICKER", "LINEN")

PRICE_SIGMA = 0.6                 # log-normal spread of prices within a category
UNAVAILABLE_SHARE = 0.03
CATALOG_AGE_DAYS = 730            # older items were launched up to this long before start_date
PREFERRED_PER_SEGMENT = 3
PREFERRED_WEIGHTS = (0.5, 0.3, 0.2)
PREFERRED_SHARE = 0.7             # share of a user's views in their segment's preferred categories
ANONYMOUS_SHARE = 0.04            # sessions of visitors who are not logged in (views only)
FIRST_COUNTRY_SHARE = 0.75
USER_ACTIVITY_POWER = 2.0         # user = floor(n * u^2): top 10% of users have ~32% of sessions
SESSION_CONTINUE = 0.8            # views per session ~ geometric, mean 1 / (1 - 0.8) = 5
MAX_VIEWS_PER_SESSION = 60
P_CART = 0.18                     # P(cart | view), logged-in users
P_PURCHASE = 0.63                 # P(purchase | cart)
QUANTITIES = ((1, 0.55), (2, 0.18), (3, 0.07), (4, 0.06), (6, 0.05), (12, 0.06), (24, 0.03))
SALE_SHARE = 0.08                 # share of (item, week) pairs on sale
SALE_FACTOR = 0.8
TREND = 0.3                       # the last day has 30% more traffic than the first
WEEKDAY = (0.9, 0.88, 0.92, 0.97, 1.08, 1.3, 1.25)          # Monday .. Sunday
HOUR = (0.3, 0.18, 0.12, 0.1, 0.1, 0.15, 0.3, 0.55, 0.8, 0.95, 1.0, 1.05,  # UTC, 00 .. 23
        1.15, 1.1, 1.0, 1.0, 1.05, 1.25, 1.55, 1.85, 2.0, 1.8, 1.25, 0.65)
WEEKEND_DAYTIME = 1.3             # weekend shopping starts earlier: 09-17h boosted
PACE_S = (20, 100)                # seconds between views: 20 + floor(u * 100)
CHECKOUT_DELAY_S = (60, 240)      # checkout this long after the last view: 60 + floor(u * 240)
CART_DELAY_S = (5, 55)            # a cart follows its view by 5 + floor(u * 55)
RETURN_DELAY_DAYS = (2, 12)       # a return follows its purchase by 2 days + floor(u * 12 days)
# The latest a session's events (returns aside) come after its start: its checkout, after the last view
# of the longest session at the slowest pace (later than any view or cart: a view's jitter is under 0.8
# pace, its cart under 60 s after it). A window's events come from sessions started at most this long before.
SESSION_SPAN_S = MAX_VIEWS_PER_SESSION * (PACE_S[0] + PACE_S[1] - 1) + CHECKOUT_DELAY_S[0] + CHECKOUT_DELAY_S[1] - 1
RETURN_SPAN_S = (RETURN_DELAY_DAYS[0] + RETURN_DELAY_DAYS[1]) * 86400   # a return's delay is under this


# One stream id per random draw, so draws are independent of each other.
(_FIRST_SEEN, _PRICE1, _PRICE2, _AVAIL, _ADJ, _COLOUR, _NOUN,
 _SEGMENT, _COUNTRY, _ANON, _USER, _SLOT, _SLOT_ALIAS, _SECOND, _PACE, _LENGTH, _CHECKOUT,
 _PREF, _PREF_PICK, _VIEW_CAT, _RANK, _RANK_LAUNCHED, _JITTER, _CART, _BUY, _RETURN,
 _QTY, _CART_DELAY, _RETURN_DELAY, _SALE) = range(1, 31)


@dataclass(frozen=True)
class SyntheticParams:
    """Size and shape of the synthetic data set (the job builds it from ``cfg.synthetic``)."""
    seed: int
    n_users: int
    n_items: int
    n_events: int
    start_date: str               # "YYYY-MM-DD", UTC
    days: int
    countries: Sequence[str]
    n_segments: int
    popularity_exponent: float    # Zipf exponent of item popularity
    return_rate: float            # share of purchases that are returned

    def __post_init__(self) -> None:
        object.__setattr__(self, "countries", tuple(self.countries))
        for name in ("n_users", "n_items", "n_events", "days", "n_segments"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"synthetic.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.countries:
            raise ValueError("synthetic.countries must list at least one country")
        if not self.popularity_exponent > 0:
            raise ValueError(f"synthetic.popularity_exponent must be > 0, got {self.popularity_exponent!r}")
        if not 0 <= self.return_rate < 1:
            raise ValueError(f"synthetic.return_rate must be in [0, 1), got {self.return_rate!r}")
        try:
            ok = re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.start_date) and date.fromisoformat(self.start_date)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"synthetic.start_date must be a date written YYYY-MM-DD, got {self.start_date!r}")
        if not all(isinstance(c, str) and c.strip() for c in self.countries):
            raise ValueError(f"synthetic.countries must be non-empty names, got {list(self.countries)!r}")
