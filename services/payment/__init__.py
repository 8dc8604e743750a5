"""The payment service: one payment intent per order, its deadline, payments and refunds."""
