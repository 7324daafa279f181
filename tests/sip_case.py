"""The example discharge and SIP case (examples/sip-case), as the SIP process tests load it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

CASE = Path(__file__).resolve().parent.parent / "examples" / "sip-case"


def example(name: str) -> dict[str, Any]:
    """One example resource by file name (without `.json`)."""
    return json.loads((CASE / f"{name}.json").read_text())


async def load_case(client: httpx.AsyncClient, leave_out: Iterable[str] = ()) -> None:
    """Every example resource (less the types in `leave_out`) in one transaction of PUTs."""
    skipped = set(leave_out)
    entries = []
    for file in sorted(CASE.glob("*.json")):
        resource = json.loads(file.read_text())
        if resource["resourceType"] in skipped:
            continue
        url = f"{resource['resourceType']}/{resource['id']}"
        entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
