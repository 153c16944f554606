"""The data contract's vocabulary, written once: the event types a source is mapped onto and the groups
that the pipeline treats alike. Spark schemas live in ``features/contract.py``; this module is plain
Python so that the config, the jobs and the pure modules share it without importing Spark."""
from __future__ import annotations

from typing import Literal

EVENT_TYPES = ("view", "cart", "purchase", "rating", "return")
# what a customer does to an item (a return undoes a purchase; it is not an action on its own)
ACTION_TYPES = ("view", "cart", "purchase", "rating")
# what carries an implicit-feedback strength (ratings carry their own value)
STRENGTH_TYPES = ("view", "cart", "purchase")

EventType = Literal["view", "cart", "purchase", "rating", "return"]
ActionType = Literal["view", "cart", "purchase", "rating"]
StrengthType = Literal["view", "cart", "purchase"]

assert EventType.__args__ == EVENT_TYPES and ActionType.__args__ == ACTION_TYPES  # noqa: S101 (one vocabulary)
assert StrengthType.__args__ == STRENGTH_TYPES  # noqa: S101

# what the web app reports back about an item it showed (POST /v1/events; docs/FEEDBACK.md)
FEEDBACK_TYPES = ("click", "add_to_cart", "purchase")
FeedbackType = Literal["click", "add_to_cart", "purchase"]
assert FeedbackType.__args__ == FEEDBACK_TYPES  # noqa: S101
