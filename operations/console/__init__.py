"""The operations and audit console at `/console`: review queue, order timeline with chain
status, seller performance, service health — server-rendered pages over the services' API,
mounted in the gateway (`is_console_path` picks its requests)."""

from operations.console.app import PREFIX, create_console, is_console_path

__all__ = ["PREFIX", "create_console", "is_console_path"]
