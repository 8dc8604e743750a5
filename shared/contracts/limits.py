"""The bounds of every number and text an order can carry: part of the published contract.

They appear as `maximum`/`maxLength` in the OpenAPI document and the exported JSON Schemas, so
a producer can check a message before sending it. Money is whole rupiah; the largest amount is
far below 2**53, so every amount survives a JSON parser that reads numbers as doubles.
"""

from __future__ import annotations

MAX_QUANTITY = 999
"""Units of one line item."""
MAX_LINE_ITEMS = 50
"""Line items in one order."""
MAX_UNIT_PRICE = 100_000_000
"""Rupiah per unit (Rp 100 million)."""
MAX_ORDER_TOTAL = 1_000_000_000
"""Rupiah for a whole order (Rp 1 billion): an order above it is refused, whatever its items."""
MAX_PAYMENT_AMOUNT = 1_000_000_000_000
"""Rupiah a payment provider may report in one callback (Rp 1 trillion). Larger than any order
total on purpose: money reported for the wrong amount is still recorded and refunded."""
MAX_NOTE_LENGTH = 500
"""Characters of a free-text note (a cancellation reason in the buyer's words)."""
MAX_ID_LENGTH = 64
"""Characters of an id (order, seller, buyer, filing, request)."""
MAX_REFERENCE_LENGTH = 128
"""Characters of a payment provider's reference or an idempotency key."""

LIMITS: dict[str, tuple[int, str]] = {
    "quantity": (MAX_QUANTITY, "units per line item"),
    "items": (MAX_LINE_ITEMS, "line items per order"),
    "unit_price": (MAX_UNIT_PRICE, "rupiah per unit"),
    "total_amount": (MAX_ORDER_TOTAL, "rupiah per order"),
    "amount (payment callback)": (MAX_PAYMENT_AMOUNT, "rupiah per reported payment"),
    "note": (MAX_NOTE_LENGTH, "characters"),
    "ids": (MAX_ID_LENGTH, "characters"),
    "gateway_reference, Idempotency-Key": (MAX_REFERENCE_LENGTH, "characters"),
}
"""The limits as the README's table lists them."""
