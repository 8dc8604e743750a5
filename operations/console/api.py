"""The console's one way to read and change anything: the services' public HTTP API, called
in-process through the gateway it is mounted in, with the signed-in caller's bearer token.

So the console can show nothing the caller could not fetch with curl: a seller sees only its
shop, a buyer only its orders, and a route for another role answers 403 here as there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp

TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Answer:
    """One API answer: the status and the decoded JSON body (a problem document on errors)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def problem(self) -> dict[str, Any]:
        """The problem document of a failed call, in the shape RFC 9457 gives it."""
        if isinstance(self.body, dict) and "title" in self.body:
            return self.body
        return {"title": "Unexpected answer", "status": self.status, "detail": str(self.body)}


class ServiceApi:
    """Calls the gateway's routes as the caller whose token it holds."""

    def __init__(self, gateway: ASGIApp, token: str | None) -> None:
        self.gateway = gateway
        self.token = token

    async def call(self, method: str, path: str, **kwargs: Any) -> Answer:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        transport = httpx.ASGITransport(app=self.gateway)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gateway", timeout=TIMEOUT_S
            ) as client:
                response = await client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            return Answer(
                503,
                {
                    "title": "Service unavailable",
                    "status": 503,
                    "detail": f"the API did not answer ({type(error).__name__}); try again",
                },
            )
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return Answer(response.status_code, body)

    async def get(self, path: str, **params: str) -> Answer:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v})

    async def post(self, path: str, body: dict[str, Any]) -> Answer:
        return await self.call("POST", path, json=body)
