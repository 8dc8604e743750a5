"""`yellowcart`: one entry point for running, demonstrating, replaying and auditing the system."""

from __future__ import annotations

from services.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
