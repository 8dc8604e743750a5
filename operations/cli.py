"""The command line: up, serve, gateway, demo, replay, audit, verify, republish, token, schemas."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shared.kernel.auth import Role
from shared.kernel.clock import SystemClock
from shared.kernel.settings import Settings

app = typer.Typer(
    help="yellowcart: event-sourced order cancellations for social-commerce shops.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 120)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # probing a starting broker logs refused connections that mean "not yet"
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="order | payment | seller-dispute | penalty")],
    host: Annotated[str | None, typer.Option(help="default: YELLOWCART_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: YELLOWCART_HTTP_PORT")] = None,
    republish_on_start: Annotated[
        bool, typer.Option(help="re-emit every stored event first (after a broker loss)")
    ] = False,
) -> None:
    """Run one service (HTTP edge, consumers, outbox relay, timers), as a container does."""
    import uvicorn

    from operations.catalog import spec_of
    from shared.contracts.policy import policy_from_environment
    from shared.kernel.runtime import configure_service_process, create_service_app

    settings = Settings()
    configure_service_process(service, settings)
    spec = spec_of(service, policy_from_environment())
    application = create_service_app(spec, settings, republish_on_start=republish_on_start)
    uvicorn.run(
        application,
        host=host or settings.http_host,
        port=port or settings.http_port,
        log_config=None,  # uvicorn's records go through the service's log pipeline
        log_level="warning",
        timeout_graceful_shutdown=15,
    )


@app.command()
def up(
    port: Annotated[
        int | None, typer.Option(help="the one base URL's port; default: YELLOWCART_HTTP_PORT")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="SQLite files and logs; default: YELLOWCART_DATA_DIR")
    ] = None,
    demo_windows: Annotated[
        bool, typer.Option(help="seconds-long payment windows, for `yellowcart demo --url`")
    ] = False,
) -> None:
    """Run everything on the embedded default: local broker, four services, one base URL."""
    from operations.stack import run_stack

    _logging(False)
    overrides: dict[str, object] = {}
    if port is not None:
        overrides["http_port"] = port
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    settings = Settings(**overrides)  # type: ignore[arg-type]
    raise typer.Exit(run_stack(settings, console, demo_windows=demo_windows))


@app.command()
def gateway(
    upstream: Annotated[
        list[str], typer.Option(help="service=url, once per service (order=http://order:8000)")
    ],
    host: Annotated[str | None, typer.Option(help="default: YELLOWCART_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: YELLOWCART_HTTP_PORT")] = None,
) -> None:
    """Serve every route on one address in front of separately deployed services."""
    import uvicorn

    from operations.gateway import create_gateway

    settings = Settings()
    upstreams = dict(item.split("=", 1) for item in upstream)
    uvicorn.run(
        create_gateway(upstreams),
        host=host or settings.http_host,
        port=port or settings.http_port,
        log_level="warning",
    )


@app.command()
def demo(
    url: Annotated[
        str | None, typer.Option(help="a running system's base URL; default: start one")
    ] = None,
) -> None:
    """Play the marketplace's cancellation scenarios end to end; print each order's timeline."""
    from operations.demo import run_demo

    _logging(False)
    raise typer.Exit(run_demo(url, console))


@app.command()
def token(
    role: Annotated[Role, typer.Option(help="buyer | seller | operator")],
    sub: Annotated[str, typer.Option(help="the buyer's, seller's or operator's id")],
    ttl_hours: Annotated[int, typer.Option(help="validity")] = 24 * 30,
    private_key: Annotated[
        Path | None, typer.Option(help="sign with this key (from `keys new`) instead")
    ] = None,
    kid: Annotated[str | None, typer.Option(help="the key id of --private-key")] = None,
) -> None:
    """Mint a bearer token: with the embedded HS256 secret, or with a private key (production)."""
    settings = Settings()
    now, ttl = SystemClock().now(), timedelta(hours=ttl_hours)
    if private_key is None:
        typer.echo(settings.issue_token(sub, role, now, ttl))
        return
    if not kid:
        raise typer.BadParameter("--kid is required with --private-key")
    from operations.keys import signed_token

    typer.echo(signed_token(private_key, kid, sub, role, now, ttl, settings.token_rules()))


keys_app = typer.Typer(help="Token signing keys for production mode (JWKS).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    kid: Annotated[str, typer.Option(help="a new key id, e.g. 2026-12")],
    private_key: Annotated[Path, typer.Option(help="where to write the private key (0600)")],
    jwks: Annotated[Path, typer.Option(help="the JWKS file the services read")],
    algorithm: Annotated[str, typer.Option(help="EdDSA or RS256")] = "EdDSA",
) -> None:
    """Create a key pair and publish its public key in the JWKS beside the others."""
    from operations.keys import new_key

    if algorithm not in ("EdDSA", "RS256"):
        raise typer.BadParameter("EdDSA or RS256")
    try:
        new_key(kid, private_key, jwks, "EdDSA" if algorithm == "EdDSA" else "RS256")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(f"key {kid}: private key in {private_key}, public key added to {jwks}")


@keys_app.command("retire")
def keys_retire(
    kid: Annotated[str, typer.Option(help="the key id to stop trusting")],
    jwks: Annotated[Path, typer.Option(help="the JWKS file the services read")],
) -> None:
    """Remove a key from the JWKS once every token it signed has expired."""
    from operations.keys import retire_key

    try:
        retire_key(kid, jwks)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(f"key {kid} removed from {jwks}")


@app.command()
def audit(
    order_id: str,
    as_of: Annotated[
        datetime | None, typer.Option("--as-of", help="state at this past moment (RFC 3339)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """One order across all services, with hash-chain verification of every stream read."""
    from operations.audit import audit_order, print_audit

    report = asyncio.run(audit_order(Settings(), order_id, as_of))
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        print_audit(report, console)
    raise typer.Exit(0 if report["chain_ok"] else 3)


@app.command()
def verify() -> None:
    """Check every stream's hash chain in every service's store."""
    from operations.audit import verify_all

    breaks = asyncio.run(verify_all(Settings(), console))
    raise typer.Exit(0 if breaks == 0 else 3)


@app.command()
def replay(
    swap: Annotated[bool, typer.Option(help="replace the live view with the rebuilt one")] = False,
) -> None:
    """Rebuild the order view from the stores into a fresh copy and diff it with the live one.

    Publishes nothing, refunds nothing, fires no timer."""
    from operations.audit import replay_views

    differences = asyncio.run(replay_views(Settings(), swap, console))
    raise typer.Exit(0 if differences == 0 or swap else 4)


@app.command()
def republish(
    service: Annotated[str, typer.Argument(help="whose stored events to re-emit")],
) -> None:
    """Re-emit a service's stored events to the broker (after a broker loss); consumers dedupe."""
    from operations.audit import republish_service

    count = asyncio.run(republish_service(Settings(), service))
    console.print(f"re-emitted {count} commits of {service}")


@app.command()
def schemas(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("deploy/asyncapi"),
    readme: Annotated[
        Path | None, typer.Option(help="also refresh this README's generated tables")
    ] = None,
) -> None:
    """Export the JSON Schema of every event and an AsyncAPI document, from the code."""
    from operations.schemas import refresh_readme, write_schemas

    for path in write_schemas(out):
        console.print(f"wrote {path}")
    if readme is not None:
        readme.write_text(refresh_readme(readme.read_text()))
        console.print(f"refreshed {readme}")
