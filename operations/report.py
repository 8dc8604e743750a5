"""`yellowcart audit ORDER --format html`: one self-contained page an auditor can file.

No script, no external stylesheet, font or image: the page is the audit's JSON report rendered
with Jinja2 from `audit_report.html.j2` (autoescaped, so event data cannot inject markup) with
an inline stylesheet. It shows the chain status and checkpoint status of every stream read,
the state of the order at the audited moment, and the timeline across services; every event's
data is in a collapsed `<details>` element, so the page is the whole record without a viewer.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from jinja2 import Environment, StrictUndefined

from operations.audit import timeline_details

TEMPLATE = "audit_report.html.j2"

_environment = Environment(autoescape=True, undefined=StrictUndefined)
_template = _environment.from_string(files("operations").joinpath(TEMPLATE).read_text())


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def render_html(report: dict[str, Any], generated_at: str = "") -> str:
    return _template.render(
        r=report, generated_at=generated_at, dump=_dump, details=timeline_details
    )
