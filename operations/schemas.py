"""JSON Schemas of every event and an AsyncAPI 3 document, generated from the contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.contracts.events import ALL_EVENTS, CHECKPOINT_TOPIC, PRODUCERS
from shared.kernel.events.envelope import DomainEvent, Envelope


def event_schema(event_class: type[DomainEvent]) -> dict[str, Any]:
    schema = event_class.model_json_schema()
    schema["title"] = event_class.event_type
    schema["x-schema-version"] = event_class.schema_version
    schema["x-topic"] = event_class.topic
    return schema


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    published = [
        (
            topic,
            f"events of the {producer} service; key = "
            + ("seller_id" if producer == "penalty" else "order_id"),
            f"published by {producer} through its outbox",
        )
        for topic, producer in PRODUCERS.items()
    ]
    published.append(
        (
            CHECKPOINT_TOPIC,
            "signed checkpoints each service seals of its own store; key = service",
            "published by every service's lease-holding replica, every "
            "YELLOWCART_CHECKPOINT_INTERVAL_S",
        )
    )
    for topic, description, summary in published:
        names = [e.event_type for e in ALL_EVENTS if e.topic == topic]
        channel_id = topic.replace(".", "_")
        channels[channel_id] = {
            "address": topic,
            "description": description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        }
        operations[f"{channel_id}_publish"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": summary,
        }
    for event_class in ALL_EVENTS:
        name = event_class.event_type
        envelope = Envelope.model_json_schema()
        envelope["properties"]["data"] = {"$ref": f"#/components/schemas/{name}"}
        messages[name] = {
            "name": name,
            "headers": {
                "type": "object",
                "properties": {"event_type": {"const": name}, "event_id": {"type": "string"}},
            },
            "payload": envelope,
            "description": (event_class.__doc__ or "").strip() or None,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "yellowcart events", "version": "1.0.0"},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {e.event_type: event_schema(e) for e in ALL_EVENTS},
        },
    }


def write_schemas(out: Path) -> list[Path]:
    schemas_dir = out / "schemas"
    schemas_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for event_class in ALL_EVENTS:
        path = schemas_dir / f"{event_class.event_type}.v{event_class.schema_version}.json"
        path.write_text(json.dumps(event_schema(event_class), indent=2, sort_keys=True) + "\n")
        written.append(path)
    envelope_path = schemas_dir / "Envelope.json"
    envelope_path.write_text(json.dumps(Envelope.model_json_schema(), indent=2) + "\n")
    asyncapi_path = out / "asyncapi.json"
    asyncapi_path.write_text(json.dumps(asyncapi_document(), indent=2) + "\n")
    return [*written, envelope_path, asyncapi_path]


def event_catalogue_markdown() -> str:
    """The README's event catalogue table."""
    lines = ["| topic | event | v | fields |", "| --- | --- | --- | --- |"]
    for event_class in ALL_EVENTS:
        fields = ", ".join(f"`{name}`" for name in event_class.model_fields)
        lines.append(
            f"| `{event_class.topic}` | {event_class.event_type} | "
            f"{event_class.schema_version} | {fields} |"
        )
    return "\n".join(lines)


def _flatten_defaults(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        rows: list[tuple[str, Any]] = []
        for key, inner in value.items():
            rows.extend(_flatten_defaults(f"{prefix}__{key.upper()}", inner))
        return rows
    return [(prefix, value)]


def settings_markdown() -> str:
    """The README's table of every YELLOWCART_ setting with its default."""
    from shared.kernel.settings import Settings

    defaults = Settings.model_construct().model_dump(mode="json")
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = json.dumps(defaults[name]) if defaults[name] not in ("", None) else "—"
        lines.append(f"| `YELLOWCART_{name.upper()}` | `{default}` | {field.description or ''} |")
    from shared.contracts.policy import Policy

    policy = Policy().model_dump(mode="json", exclude={"version"})
    for variable, value in _flatten_defaults("YELLOWCART_POLICY", policy):
        lines.append(f"| `{variable}` | `{json.dumps(value)}` | policy (see §Policy) |")
    return "\n".join(lines)


def limits_markdown() -> str:
    """The README's table of the bounds every order, payment and text is held to."""
    from shared.contracts.limits import LIMITS

    lines = ["| field | at most | unit |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {limit:,} | {unit} |" for name, (limit, unit) in LIMITS.items()]
    return "\n".join(lines)


GENERATED_SECTIONS = {
    "events": event_catalogue_markdown,
    "settings": settings_markdown,
    "limits": limits_markdown,
}


def refresh_readme(text: str) -> str:
    """The README with its generated sections (between `<!-- name:start/end -->`) rewritten."""
    for name, make in GENERATED_SECTIONS.items():
        start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = f"{before}{start}{make()}{end}{after}"
    return text
