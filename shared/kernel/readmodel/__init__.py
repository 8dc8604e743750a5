"""Read-model storage for projections (documents keyed by id, per collection)."""
