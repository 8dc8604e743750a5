"""The event kernel: aggregates, the event store and its adapters, outbox, consumers, timers,
projections, the HTTP edge and the process runtime.

It knows no product: no event, no policy, no service. What varies between services (their event
registry, their policy, their routes) is handed in by each service's composition root.
"""
