"""Operations tooling: the `yellowcart` command line, the embedded stack that `up` runs (local
broker, supervisor, gateway), and the audit, replay, schema and demo tools.

Nothing here runs inside a service process. It may import every other part of the project;
no service and nothing in `shared` imports it.
"""

from __future__ import annotations


def main() -> None:
    """The `yellowcart` console script."""
    from operations.cli import app

    app()
