"""Seller-dispute service: one CancellationCase per order (buyer request, seller filing,
platform decision)."""
