"""What the four services stand on: the event kernel (`shared.kernel`) and the published
contracts (`shared.contracts`) that other teams build against."""
