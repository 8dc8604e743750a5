"""Penalty service: one SellerRecord per seller (points, orders, seller-fault cancellations,
standing)."""
