"""The command line: up, serve, gateway, demo, token, schemas, and the auditor's and
operator's tools: audit, verify, checkpoint, replay, republish, dlq."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from shared.kernel.auth import Role
from shared.kernel.clock import SystemClock, to_rfc3339
from shared.kernel.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from operations.audit import ReplayReport, VerifyReport
    from operations.checkpoint import Checkpoint
    from operations.deadletters import Action, DeadLetter, Filters
    from operations.sealed import LatestSeals
    from shared.kernel.eventstore.port import EventStore

T = TypeVar("T")

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


# --- the auditor's tools -----------------------------------------------------------------
# Exit codes (README, "Command line"): 0 all good; 1 an unexpected failure; 2 refused (the
# stores are not named per service, or bad input), nothing read or written; 3 a hash chain is
# broken; 4 the rebuilt view differs from the live one, or a swap was refused; 5 the log no
# longer extends the checkpoint, or the checkpoint's signature does not hold.
EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_CHAIN_BROKEN, EXIT_VIEW_DIFFERS, EXIT_CHECKPOINT = range(6)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def _say(message: str) -> None:
    """A line for the operator on stderr, unwrapped (logs keep it whole), never on stdout."""
    errors.print(message, highlight=False, soft_wrap=True)


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="the embedded SQLite files (DIR/order.db, …) instead of YELLOWCART_STORE_URLS",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
Against = Annotated[
    Path | None, typer.Option("--against", help="a signed checkpoint the log must extend")
]
AgainstTopic = Annotated[
    bool,
    typer.Option(
        "--against-topic",
        help="the latest checkpoint each service sealed on checkpoint.events (the broker at "
        "YELLOWCART_BROKER_URL)",
    ),
]
PublicKey = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        envvar="YELLOWCART_CHECKPOINT_PUBLIC_KEY",
        help="the auditor's Ed25519 public key (PEM) the checkpoint must be signed with",
    ),
]


@contextmanager
def _readable_errors() -> Iterator[None]:
    """A refusal or a failure becomes a readable line on stderr and an exit code."""
    from operations.checkpoint import CheckpointError
    from operations.stores import StoreSelectionError
    from shared.kernel.eventstore.port import EventStoreError

    try:
        yield
    except StoreSelectionError as error:
        _say(f"[red]refused:[/] {error}")
        raise typer.Exit(EXIT_REFUSED) from None
    except CheckpointError as error:
        _say(f"[red]checkpoint:[/] {error}")
        raise typer.Exit(EXIT_CHECKPOINT) from None
    except (EventStoreError, OSError, ValueError) as error:
        _say(f"[red]failed:[/] {type(error).__name__}: {error}")
        raise typer.Exit(EXIT_FAILED) from None


def _run(work: Coroutine[Any, Any, T]) -> T:
    with _readable_errors():
        return asyncio.run(work)


async def _with_stores(
    data_dir: Path | None,
    use: Callable[[dict[str, EventStore]], Awaitable[T]],
    services: Sequence[str] | None = None,
) -> T:
    from operations.catalog import SERVICES
    from operations.stores import close_stores, open_service_stores, service_store_urls

    urls = service_store_urls(Settings(), data_dir, services or SERVICES)
    stores = await open_service_stores(urls)
    try:
        return await use(stores)
    finally:
        await close_stores(stores)


def _checkpoint(
    against: Path | None, public_key: Path | None, against_topic: bool = False
) -> Checkpoint | None:
    from operations.checkpoint import (
        CheckpointError,
        open_checkpoint,
        open_documents,
    )

    if against is None and not against_topic:
        return None
    if against is not None and against_topic:
        raise CheckpointError("give --against FILE or --against-topic, not both")
    key = _public_key(public_key)
    if against is not None:
        checkpoint = open_checkpoint(against, key)
    else:
        seals = _read_seals()
        checkpoint = open_documents(seals.all_documents(), key, "checkpoint.events")
    if not checkpoint.key_pinned:
        _say(
            "[yellow]note:[/] the checkpoint's signature was checked with the key inside the "
            "file only; pass --public-key (the auditor's key) to know who signed it",
        )
    return checkpoint


def _read_seals() -> LatestSeals:
    from aiokafka.errors import KafkaError

    from operations.checkpoint import CheckpointError
    from operations.sealed import read_latest_seals
    from shared.kernel.messaging.kafka import client_security

    settings = Settings()
    broker = settings.broker_url
    try:
        login = client_security(settings)
    except ValueError as error:
        raise CheckpointError(f"cannot read checkpoint.events at {broker}: {error}") from error
    try:
        seals = asyncio.run(read_latest_seals(broker, security=login))
    except (KafkaError, TimeoutError) as error:
        raise CheckpointError(f"cannot read checkpoint.events at {broker}: {error}") from error
    if seals.malformed or seals.incomplete:
        _say(
            f"[yellow]note:[/] checkpoint.events holds {seals.malformed} malformed record(s) "
            f"and {seals.incomplete} incomplete seal(s), skipped"
        )
    return seals


@app.command()
def audit(
    order_id: str,
    as_of: Annotated[
        datetime | None, typer.Option("--as-of", help="state at this past moment (RFC 3339)")
    ] = None,
    as_json: AsJson = False,
    output_format: Annotated[
        str, typer.Option("--format", help="table | json | html (a self-contained report)")
    ] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", help="write the report here (html: default ORDER.html)")
    ] = None,
    against: Against = None,
    against_topic: AgainstTopic = False,
    public_key: PublicKey = None,
    data_dir: DataDir = None,
) -> None:
    """One order across all services, with hash-chain (and checkpoint) verification."""
    from operations.audit import audit_order, print_audit

    output_format = "json" if as_json else output_format
    if output_format not in ("table", "json", "html"):
        _say(f"[red]refused:[/] --format must be table, json or html, not {output_format}")
        raise typer.Exit(EXIT_REFUSED)
    with _readable_errors():
        checkpoint = _checkpoint(against, public_key, against_topic)
    report = _run(
        _with_stores(data_dir, lambda stores: audit_order(stores, order_id, as_of, checkpoint))
    )
    if output_format == "json":
        text = json.dumps(report, indent=2, default=str)
        if out is None:
            typer.echo(text)
        else:
            out.write_text(text)
    elif output_format == "html":
        from operations.report import render_html

        target = out or Path(f"{order_id}.html")
        target.write_text(render_html(report, to_rfc3339(SystemClock().now())))
        _say(f"wrote {target}")
    else:
        print_audit(report, console)
    if not report["chain_ok"]:
        raise typer.Exit(EXIT_CHAIN_BROKEN)
    raise typer.Exit(EXIT_OK if report["checkpoint_ok"] else EXIT_CHECKPOINT)


@app.command()
def verify(
    against: Against = None,
    against_topic: AgainstTopic = False,
    public_key: PublicKey = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Check every stream's hash chain in every store; --against: that the log extends a checkpoint.

    A signed checkpoint catches history rewritten and rehashed, which the chain alone cannot."""
    from operations.audit import verify_stores
    from operations.progress import progress

    with _readable_errors():
        checkpoint = _checkpoint(against, public_key, against_topic)

    async def work(stores: dict[str, EventStore]) -> VerifyReport:
        with progress(errors, "verifying", "events") as advance:
            return await verify_stores(stores, checkpoint, advance)

    report = _run(_with_stores(data_dir, work))
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        print_verify(report, console)
    if not report.chain_ok:
        raise typer.Exit(EXIT_CHAIN_BROKEN)
    raise typer.Exit(EXIT_OK if report.extends_checkpoint else EXIT_CHECKPOINT)


def print_verify(report: VerifyReport, out: Console) -> None:
    from rich.table import Table

    table = Table("service", "streams", "commits", "events", "chain", title="hash chains")
    broken = {b["service"] for b in report.breaks}
    for summary in report.stores:
        table.add_row(
            summary.service,
            f"{summary.streams:,}",
            f"{summary.commits:,}",
            f"{summary.events:,}",
            "[red]broken[/]" if summary.service in broken else "[green]intact[/]",
        )
    out.print(table)
    if report.breaks:
        breaks = Table("service", "stream", "version", "position", "what", title="chain breaks")
        for b in report.breaks:
            breaks.add_row(
                b["service"], b["stream_id"], str(b["version"]), str(b["position"]), b["detail"]
            )
        out.print(breaks)
    if report.checkpoint is not None:
        sealed = report.checkpoint.sealed_at
        if report.extends_checkpoint:
            streams = sum(map(len, report.checkpoint.heads.values()))
            out.print(f"[green]the log extends the checkpoint of {sealed}[/] ({streams:,} streams)")
        else:
            mismatches = Table(
                "service",
                "stream",
                "version",
                "what",
                title=f"not extending the checkpoint of {sealed}",
            )
            for m in report.mismatches:
                mismatches.add_row(m.service, m.stream_id, str(m.version), m.detail)
            out.print(mismatches)


@app.command()
def checkpoint(
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="the Ed25519 private key (PEM file); default: the services' setting "
            "YELLOWCART_CHECKPOINT_KEY (or its _FILE)",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="the checkpoint file")] = Path(
        "checkpoint.json"
    ),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="verify and count; write nothing")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Seal the head of every stream of every store in a signed JSON file for the auditor.

    The file is kept outside the system; a broken chain is refused, never sealed."""
    from operations.audit import verify_stores
    from operations.checkpoint import CheckpointError, load_private_key, seal
    from operations.progress import progress
    from shared.kernel.checkpoints import private_key_from_pem

    try:
        if key is not None:
            private_key = load_private_key(key)
        elif Settings().checkpoint_key:
            private_key = private_key_from_pem(Settings().checkpoint_key.encode())
        else:
            _say("[red]refused:[/] --key (or YELLOWCART_CHECKPOINT_KEY_FILE) names no key")
            raise typer.Exit(EXIT_REFUSED)
    except (OSError, ValueError) as error:
        _say(f"[red]refused:[/] cannot read the private key {key}: {error}")
        raise typer.Exit(EXIT_REFUSED) from None
    except CheckpointError as error:
        _say(f"[red]refused:[/] {error}")
        raise typer.Exit(EXIT_REFUSED) from None

    async def work(stores: dict[str, EventStore]) -> VerifyReport:
        with progress(errors, "reading heads", "events") as advance:
            return await verify_stores(stores, None, advance, keep_heads=True)

    report = _run(_with_stores(data_dir, work))
    if not report.chain_ok:
        print_verify(report, console)
        _say("[red]refused:[/] a broken chain is not sealed; investigate it first")
        raise typer.Exit(EXIT_CHAIN_BROKEN)
    streams = sum(map(len, report.heads.values()))
    if dry_run:
        console.print(f"dry run: would seal {streams:,} streams into {out}")
        raise typer.Exit(EXIT_OK)
    document = seal(report.heads, SystemClock().now(), private_key)
    out.write_text(json.dumps(document, indent=1) + "\n")
    console.print(f"sealed {streams:,} streams of {len(report.heads)} stores into {out}")


@app.command("checkpoint-fetch")
def checkpoint_fetch(
    out: Annotated[Path, typer.Option("--out", help="the checkpoint file to write")],
    public_key: PublicKey = None,
) -> None:
    """Save the latest checkpoint each service sealed on checkpoint.events, for the auditor.

    Every document's signature is checked first (with --public-key: the services' key);
    `verify --against FILE` then checks the stores against it, long after the topic forgot."""
    from operations.checkpoint import bundle, open_documents

    with _readable_errors():
        seals = _read_seals()
        key = _public_key(public_key)
        checkpoint = open_documents(seals.all_documents(), key, "checkpoint.events")
    out.write_text(json.dumps(bundle(seals.all_documents()), indent=1) + "\n")
    streams = sum(map(len, checkpoint.heads.values()))
    for service, sealed_at in sorted(seals.sealed_at.items()):
        console.print(f"{service:<15} sealed {sealed_at}")
    console.print(f"wrote {streams:,} sealed heads of {len(seals.documents)} services to {out}")


def _public_key(path: Path | None) -> Ed25519PublicKey | None:
    from operations.checkpoint import CheckpointError, load_public_key

    try:
        return load_public_key(path) if path else None
    except OSError as error:
        raise CheckpointError(f"cannot read the public key {path}: {error}") from error


@app.command("checkpoint-key")
def checkpoint_key(
    private: Annotated[Path, typer.Option(help="where to write the private key (PEM, mode 600)")],
    public: Annotated[Path, typer.Option(help="where to write the public key (PEM)")],
) -> None:
    """Make an Ed25519 key pair for signing checkpoints.

    The private key stays with whoever seals; auditors verify with the public one."""
    from operations.checkpoint import generate_key

    for path in (private, public):
        if path.exists():
            _say(f"[red]refused:[/] {path} exists; not overwriting a key")
            raise typer.Exit(EXIT_REFUSED)
    generate_key(private, public)
    console.print(f"wrote {private} and {public}")


@app.command()
def replay(
    swap: Annotated[
        bool, typer.Option(help="replace the live view with the rebuilt one, once verified")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="rebuild and diff in memory; write nothing")
    ] = False,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Rebuild the order view beside the live one, verify it, diff; --swap replaces the live one.

    The replaced view is kept as order_views_before_swap. Publishes nothing, refunds nothing,
    fires no timer."""
    from operations.audit import REPLAY_COLLECTION, replay_views
    from operations.progress import progress
    from operations.stores import service_store_urls
    from shared.kernel.storage import open_document_store

    async def work(stores: dict[str, EventStore]) -> ReplayReport:
        url = service_store_urls(Settings(), data_dir, ["order"])["order"]
        documents = await open_document_store(url)
        try:
            with progress(errors, "replaying", "events") as advance:
                return await replay_views(
                    stores, documents, swap=swap, dry_run=dry_run, advance=advance
                )
        finally:
            await documents.close()

    report = _run(_with_stores(data_dir, work))
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        where = f"into '{REPLAY_COLLECTION}'" if report.written else "in memory (dry run)"
        console.print(
            f"rebuilt {report.rebuilt:,} order views {where}; the live view has "
            f"{report.live:,}; {len(report.differing):,} differ"
        )
        for order_id in report.differing[:20]:
            console.print(f"  differs: {order_id}")
        if len(report.differing) > 20:
            console.print(f"  … and {len(report.differing) - 20:,} more (--json lists all)")
        for order_id, streams in list(report.would_lose.items())[:20]:
            console.print(
                f"  [red]the rebuild lacks events the live view has:[/] {order_id} "
                f"({', '.join(streams)})"
            )
        for problem in report.problems:
            console.print(f"  [red]{problem}[/]")
        if report.swapped:
            console.print(
                "swapped the rebuilt view in; the previous one is in order_views_before_swap"
            )
        elif swap and dry_run:
            console.print("dry run: nothing written, nothing swapped")
        elif swap:
            console.print("[red]not swapped[/]: the live view is unchanged")
    if swap and not dry_run:
        raise typer.Exit(EXIT_OK if report.swapped else EXIT_VIEW_DIFFERS)
    raise typer.Exit(EXIT_OK if not report.differing else EXIT_VIEW_DIFFERS)


@app.command()
def republish(
    service: Annotated[str, typer.Argument(help="whose stored events to re-emit")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be re-emitted; send nothing")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Re-emit a service's stored events to the broker (after a broker loss); consumers dedupe."""
    from operations.audit import count_events, republish_store
    from operations.catalog import SERVICES
    from operations.progress import progress
    from shared.kernel.messaging import make_producer

    if service not in SERVICES:
        _say(f"[red]refused:[/] unknown service {service!r}; one of {', '.join(SERVICES)}")
        raise typer.Exit(EXIT_REFUSED)

    async def work(stores: dict[str, EventStore]) -> int:
        with progress(errors, f"re-emitting {service}", "events") as advance:
            if dry_run:
                return await count_events(stores[service], advance)
            producer = make_producer(Settings())
            await producer.start()
            try:
                return await republish_store(stores[service], producer, advance)
            finally:
                await producer.stop()

    count = _run(_with_stores(data_dir, work, [service]))
    verb = "would re-emit" if dry_run else "re-emitted"
    console.print(f"{verb} {count:,} events of {service}")


# --- the dead-letter workbench ------------------------------------------------------------

dlq_app = typer.Typer(
    help="Dead letters: list, show, redrive to the one group that failed, purge.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")

SourceTopics = Annotated[
    list[str] | None,
    typer.Option("--topic", help="source topic(s) whose .dlq to read; default: the four topics"),
]
Group = Annotated[str | None, typer.Option("--group", help="only this consumer group's")]
ErrorText = Annotated[str | None, typer.Option("--error", help="error text or type contains")]
OlderThan = Annotated[
    str | None, typer.Option("--older-than", help="failed longer ago than (ISO 8601: PT1H)")
]
NewerThan = Annotated[
    str | None, typer.Option("--newer-than", help="failed more recently than (ISO 8601: P1D)")
]
By = Annotated[
    str | None, typer.Option("--by", help="who does this, for the ledger; default: login name")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="say what would happen; send nothing")]


def _duration(text: str | None, option: str) -> timedelta | None:
    from pydantic import TypeAdapter, ValidationError

    if text is None:
        return None
    try:
        return TypeAdapter(timedelta).validate_python(text)
    except ValidationError:
        _say(f"[red]refused:[/] {option} takes an ISO 8601 duration such as PT30M or P1D")
        raise typer.Exit(EXIT_REFUSED) from None


def _filters(
    group: str | None,
    error: str | None,
    older_than: str | None,
    newer_than: str | None,
    include_done: bool,
) -> Filters:
    from operations.deadletters import Filters

    return Filters(
        group=group,
        error=error,
        older_than=_duration(older_than, "--older-than"),
        newer_than=_duration(newer_than, "--newer-than"),
        include_done=include_done,
    )


def _source_topics(topics: list[str] | None) -> list[str]:
    from shared.contracts.events import TOPICS

    return list(topics or TOPICS)


def _run_dlq(work: Coroutine[Any, Any, T]) -> T:
    from aiokafka.errors import KafkaError

    from operations.deadletters import DeadLetterError

    try:
        return _run(work)
    except DeadLetterError as error:
        _say(f"[red]refused:[/] {error}")
        raise typer.Exit(EXIT_REFUSED) from None
    except (KafkaError, TimeoutError) as error:
        _say(f"[red]failed:[/] the broker at {Settings().broker_url}: {error}")
        raise typer.Exit(EXIT_FAILED) from None


@dlq_app.command("list")
def dlq_list(
    topic: SourceTopics = None,
    group: Group = None,
    error: ErrorText = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    include_done: Annotated[
        bool, typer.Option("--all", help="also the ones already redriven or purged")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Dead letters, oldest first per topic, with who rejected them and why."""
    from rich.table import Table

    from operations.deadletters import list_dead_letters

    filters = _filters(group, error, older_than, newer_than, include_done)
    letters = _run_dlq(
        list_dead_letters(
            Settings().broker_url, _source_topics(topic), filters, SystemClock().now()
        )
    )
    if as_json:
        typer.echo(json.dumps([letter.summary() for letter in letters], indent=2))
        return
    table = Table("id", "group", "event", "failed at", "error", "state", title="dead letters")
    for letter in letters:
        table.add_row(
            letter.id,
            letter.consumer_group or "?",
            letter.event_type or "?",
            letter.failed_at,
            f"{letter.error_reason}: {letter.error[:80]}",
            letter.state,
        )
    console.print(table)


@dlq_app.command("show")
def dlq_show(
    letter_id: Annotated[str, typer.Argument(help="<topic>.dlq:<partition>:<offset>")],
) -> None:
    """One dead letter in full: headers, body, state (JSON)."""
    from operations.deadletters import find

    letter = _run_dlq(find(Settings().broker_url, letter_id))
    typer.echo(json.dumps(letter.detail(), indent=2))


async def _selected(
    letter_ids: list[str], topic: list[str] | None, filters: Filters
) -> list[DeadLetter]:
    from operations.deadletters import find, list_dead_letters

    broker_url = Settings().broker_url
    if letter_ids:
        return [await find(broker_url, letter_id) for letter_id in letter_ids]
    return await list_dead_letters(broker_url, _source_topics(topic), filters, SystemClock().now())


def _act(
    action: str,
    letter_ids: list[str],
    topic: list[str] | None,
    filters: Filters,
    by: str | None,
    dry_run: bool,
) -> None:
    import getpass

    from operations.deadletters import purge, redrive
    from shared.kernel.messaging import make_producer

    if not letter_ids and filters.group is None:
        _say(f"[red]refused:[/] name the dead letters to {action}, or at least --group")
        raise typer.Exit(EXIT_REFUSED)
    who = by or getpass.getuser()

    async def work() -> list[Action]:
        letters = await _selected(letter_ids, topic, filters)
        producer = make_producer(Settings())
        await producer.start()
        try:
            act = redrive if action == "redrive" else purge
            return await act(producer, letters, by=who, clock=SystemClock(), dry_run=dry_run)
        finally:
            await producer.stop()

    for done in _run_dlq(work()):
        where = f" -> {done.to}" if done.to else ""
        prefix = "dry run: would " if done.dry_run else ""
        console.print(
            f"{prefix}{action} {done.dead_letter} for {done.consumer_group or '?'}{where} "
            f"(by {done.by})"
        )


@dlq_app.command("redrive")
def dlq_redrive(
    letter_ids: Annotated[list[str] | None, typer.Argument(help="dead letter ids")] = None,
    topic: SourceTopics = None,
    group: Group = None,
    error: ErrorText = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    by: By = None,
    dry_run: DryRun = False,
) -> None:
    """Send dead letters back to their topic for the one group that failed them.

    The other groups skip them; each redrive is recorded in yellowcart.dlq.actions."""
    _act(
        "redrive",
        letter_ids or [],
        topic,
        _filters(group, error, older_than, newer_than, False),
        by,
        dry_run,
    )


@dlq_app.command("purge")
def dlq_purge(
    letter_ids: Annotated[list[str] | None, typer.Argument(help="dead letter ids")] = None,
    topic: SourceTopics = None,
    group: Group = None,
    error: ErrorText = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    by: By = None,
    dry_run: DryRun = False,
) -> None:
    """Retire dead letters: hidden from `list`, recorded in yellowcart.dlq.actions.

    The bytes stay until the topic's retention: the local broker cannot delete records."""
    _act(
        "purge",
        letter_ids or [],
        topic,
        _filters(group, error, older_than, newer_than, False),
        by,
        dry_run,
    )


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
