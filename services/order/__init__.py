"""The order service: places orders, takes payment confirmations, ships and cancels."""
