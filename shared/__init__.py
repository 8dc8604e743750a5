"""Code every yellowcart service stands on: the event kernel, storage, messaging, timers."""
