"""Generated artefacts stay generated: the README's tables and the schemas (the compose file
is checked in tests/deploy)."""

from __future__ import annotations

from pathlib import Path

from operations.schemas import refresh_readme, write_schemas

ROOT = Path(__file__).resolve().parents[2]


def test_readme_event_catalogue_and_settings_match_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    assert refresh_readme(readme) == readme, "run: yellowcart schemas --readme README.md"


def test_readme_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def test_committed_schemas_and_asyncapi_match_the_code(tmp_path: Path) -> None:
    for generated in write_schemas(tmp_path):
        committed = ROOT / "deploy" / "asyncapi" / generated.relative_to(tmp_path)
        assert committed.read_text() == generated.read_text(), f"stale: {committed}"


def test_every_event_schema_names_its_topic_and_version(tmp_path: Path) -> None:
    import json

    for path in write_schemas(tmp_path):
        if path.parent.name == "schemas" and path.name != "Envelope.json":
            schema = json.loads(path.read_text())
            assert schema["x-topic"].endswith(".events")
            assert path.name.endswith(f".v{schema['x-schema-version']}.json")
