"""What a search returns besides its matches: includes, paging, subsets, totals, outcomes.

Every test runs over HTTP on both engines.  A small linked population (an Organization, a
Practitioner, Patients, CarePlans and Observations referring to them) is stored through the
API; the expectations name each entry exactly, as (search mode, type, id).  CarePlans carry no
SIP category, so the SIP CarePlan profile does not apply to them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.resources import care_plan, patient

BASE = "http://testserver/fhir"
SUBSETTED_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
LOINC = "http://loinc.org"

Entry = tuple[str, str, str]  # (search mode, resource type, id)


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    created = await client.post(f"/{resource['resourceType']}", json=resource)
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def _search(
    client: httpx.AsyncClient,
    url: str,
    params: Any = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = await client.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _entries(bundle: dict[str, Any]) -> list[Entry]:
    """Every entry as (mode, type, id), checking fullUrl agrees with the resource."""
    out = []
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        mode = entry["search"]["mode"]
        if mode != "outcome":
            assert entry["fullUrl"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"
        out.append((mode, resource["resourceType"], resource.get("id", "")))
    return out


def _exactly(bundle: dict[str, Any], expected: list[Entry]) -> None:
    """The bundle holds exactly these entries, each once (order aside)."""
    got = _entries(bundle)
    duplicates = [e for e, n in Counter(got).items() if n > 1]
    assert duplicates == [], f"entries repeated: {duplicates}"
    assert sorted(got) == sorted(expected)


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    urls = [link["url"] for link in bundle.get("link", []) if link["relation"] == relation]
    assert len(urls) <= 1
    return urls[0] if urls else None


def _is_subsetted(resource: dict[str, Any]) -> bool:
    tags = resource.get("meta", {}).get("tag", [])
    return any(t.get("system") == SUBSETTED_SYSTEM and t.get("code") == "SUBSETTED" for t in tags)


@pytest.fixture
async def world(client: httpx.AsyncClient) -> dict[str, str]:
    """Name -> server id.

    org <- p1.managingOrganization;  gp <- p1/p2.generalPractitioner;  p1 <- p2.link;
    cp1, cp2 -> p1 (cp1's activity performed by gp);  cp3 -> p2;
    o1, o2 -> p1;  o3 -> p2;  p3 stands alone.
    """
    ids: dict[str, str] = {}
    ids["org"] = await _create(client, {"resourceType": "Organization", "name": "Vårdcentral"})
    ids["gp"] = await _create(
        client, {"resourceType": "Practitioner", "name": [{"family": "Läkare"}]}
    )
    gp = [{"reference": f"Practitioner/{ids['gp']}"}]
    ids["p1"] = await _create(
        client,
        patient(
            "191212121212",
            "Tolvansson",
            generalPractitioner=gp,
            managingOrganization={"reference": f"Organization/{ids['org']}"},
        ),
    )
    ids["p2"] = await _create(
        client,
        patient(
            "194004049999",
            "Svensson",
            generalPractitioner=gp,
            link=[{"other": {"reference": f"Patient/{ids['p1']}"}, "type": "seealso"}],
        ),
    )
    ids["p3"] = await _create(client, patient("195005059999", "Ensam"))
    performed = {"status": "in-progress", "performer": gp}
    ids["cp1"] = await _create(
        client, care_plan(f"Patient/{ids['p1']}", activity=[{"detail": performed}])
    )
    ids["cp2"] = await _create(client, care_plan(f"Patient/{ids['p1']}", title="Andra planen"))
    ids["cp3"] = await _create(client, care_plan(f"Patient/{ids['p2']}"))
    for name, subject in (("o1", "p1"), ("o2", "p1"), ("o3", "p2")):
        ids[name] = await _create(
            client,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
                "subject": {"reference": f"Patient/{ids[subject]}"},
                "valueQuantity": {"value": 70, "unit": "kg"},
            },
        )
    return ids


def _e(ids: dict[str, str], mode: str, *names: str) -> list[Entry]:
    types = {"org": "Organization", "gp": "Practitioner", "p": "Patient"}
    types |= {"cp": "CarePlan", "o": "Observation"}
    out = []
    for name in names:
        type = types.get(name) or types[name.rstrip("0123456789")]
        out.append((mode, type, ids[name]))
    return out


# --- 1. _include ------------------------------------------------------------------------------


async def test_include_adds_each_shared_subject_once_as_include(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    bundle = await _search(client, "/CarePlan", {"_include": "CarePlan:subject"})
    _exactly(bundle, _e(world, "match", "cp1", "cp2", "cp3") + _e(world, "include", "p1", "p2"))
    assert bundle["total"] == 3  # the total counts matches only


async def test_include_with_target_type_follows_only_that_type(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    matches = _e(world, "match", "cp1", "cp2", "cp3")
    typed = await _search(client, "/CarePlan", {"_include": "CarePlan:subject:Patient"})
    _exactly(typed, matches + _e(world, "include", "p1", "p2"))
    other = await _search(client, "/CarePlan", {"_include": "CarePlan:subject:Group"})
    _exactly(other, matches)


async def test_include_wildcard_follows_every_reference_parameter(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    # subject and patient both point at the Patients; performer (activity) at the GP.
    bundle = await _search(client, "/CarePlan", {"_include": "CarePlan:*"})
    expected = _e(world, "match", "cp1", "cp2", "cp3") + _e(world, "include", "p1", "p2", "gp")
    _exactly(bundle, expected)
    subject_only = await _search(client, "/CarePlan", {"_include": "CarePlan:subject"})
    assert ("include", "Practitioner", world["gp"]) not in _entries(subject_only)


async def test_included_resource_that_is_also_a_match_appears_once_as_match(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    # p2.link -> p1: with p1 among the matches it is not repeated as an include.
    both = await _search(client, "/Patient", {"_include": "Patient:link"})
    _exactly(both, _e(world, "match", "p1", "p2", "p3"))
    only_p2 = await _search(client, "/Patient", {"_id": world["p2"], "_include": "Patient:link"})
    _exactly(only_p2, _e(world, "match", "p2") + _e(world, "include", "p1"))


async def test_iterated_include_back_to_a_match_does_not_repeat_it(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    params = {"_id": world["p1"], "_revinclude": "Observation:subject"}
    params["_include:iterate"] = "Observation:subject"
    bundle = await _search(client, "/Patient", params)
    _exactly(bundle, _e(world, "match", "p1") + _e(world, "include", "o1", "o2"))


# --- 2. _revinclude ---------------------------------------------------------------------------


async def test_revinclude_adds_the_referring_care_plans(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    params = {"_id": world["p1"], "_revinclude": "CarePlan:subject"}
    bundle = await _search(client, "/Patient", params)
    _exactly(bundle, _e(world, "match", "p1") + _e(world, "include", "cp1", "cp2"))
    assert bundle["total"] == 1


async def test_revinclude_with_no_referrers_adds_no_include_entries(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    params = {"_id": world["p3"], "_revinclude": "Observation:subject"}
    bundle = await _search(client, "/Patient", params)
    _exactly(bundle, _e(world, "match", "p3"))


# --- 3. :iterate ------------------------------------------------------------------------------


async def test_include_iterate_reaches_the_second_hop_once(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    params = [
        ("_include", "Observation:subject"),
        ("_include:iterate", "Patient:general-practitioner"),
        ("_include:iterate", "Patient:organization"),
    ]
    bundle = await _search(client, "/Observation", params)
    # gp is the GP of both p1 and p2: one entry.
    expected = _e(world, "match", "o1", "o2", "o3")
    expected += _e(world, "include", "p1", "p2", "gp", "org")
    _exactly(bundle, expected)


async def test_include_without_iterate_stops_after_the_first_hop(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    params = [
        ("_include", "Observation:subject"),
        ("_include", "Patient:general-practitioner"),
        ("_include", "Patient:organization"),
    ]
    bundle = await _search(client, "/Observation", params)
    _exactly(bundle, _e(world, "match", "o1", "o2", "o3") + _e(world, "include", "p1", "p2"))


# --- 4. Paging while data changes -------------------------------------------------------------


def _original(i: int) -> dict[str, Any]:
    return patient(f"19500101{i:04d}", f"Original{i:02d}")


def _newcomer(page: int, i: int) -> dict[str, Any]:
    return patient(f"19600101{page}{i:03d}", f"Aaanew{page}{i:03d}")  # sorts before originals


async def _page_through_while_creating(
    client: httpx.AsyncClient,
    params: dict[str, Any],
    original: Callable[[int], dict[str, Any]] = _original,
    newcomer: Callable[[int, int], dict[str, Any]] = _newcomer,
    newcomers: int = 50,
) -> tuple[list[str], list[str]]:
    """25 Patients, then pages of 10; `newcomers` new Patients are created after each of the
    first two pages (their random ids fall on both sides of the keyset cursor).  Returns the
    original ids and every match id seen, in order."""
    originals = [await _create(client, original(i)) for i in range(25)]
    seen: list[str] = []
    url: str | None = "/Patient"
    query: Any = {"_count": "10", **params}
    pages = 0
    while url:
        bundle = await _search(client, url, query)
        seen += [id for mode, _, id in _entries(bundle) if mode == "match"]
        pages += 1
        if pages <= 2:
            for i in range(newcomers):
                await _create(client, newcomer(pages, i))
        url, query = _link(bundle, "next"), None
        assert pages < 50, "paging does not end"
    return originals, seen


def _skips_and_repeats(originals: list[str], seen: list[str]) -> tuple[list[int], list[int]]:
    counts = Counter(seen)
    skipped = [i for i, id in enumerate(originals) if counts[id] == 0]
    repeated = [i for i, id in enumerate(originals) if counts[id] > 1]
    return skipped, repeated


async def test_unsorted_paging_visits_each_original_once_while_patients_are_created(
    client: httpx.AsyncClient,
) -> None:
    originals, seen = await _page_through_while_creating(client, {})
    assert _skips_and_repeats(originals, seen) == ([], [])
    assert [id for id, n in Counter(seen).items() if n > 1] == []


async def test_sorted_paging_visits_each_original_once_while_patients_are_created(
    client: httpx.AsyncClient,
) -> None:
    originals, seen = await _page_through_while_creating(client, {"_sort": "family"})
    assert _skips_and_repeats(originals, seen) == ([], [])
    assert [id for id, n in Counter(seen).items() if n > 1] == []


async def test_date_window_paging_visits_each_original_once_while_patients_are_created(
    client: httpx.AsyncClient,
) -> None:
    """A date window (`birthdate=ge…&birthdate=lt…`) is the search SQLite walks in date order
    (latest first) rather than by id; its keyset pages must hold as well.  The new Patients
    have birth dates inside the window, on both sides of the cursor."""
    await _create(client, patient("194912310000", "Before", birthDate="1949-12-31"))
    await _create(client, patient("195101010000", "After", birthDate="1951-01-01"))

    def original(i: int) -> dict[str, Any]:
        day = f"1950-{1 + i % 12:02d}-{1 + i:02d}"
        return patient(f"1950{i:04d}0000", f"Window{i}", birthDate=day)

    def newcomer(page: int, i: int) -> dict[str, Any]:
        day = f"1950-{1 + (i + page) % 12:02d}-{10 + i:02d}"
        return patient(f"1950{page}{i:03d}0000", "New", birthDate=day)

    window = {"birthdate": ["ge1950-01-01", "lt1951-01-01"]}
    originals, seen = await _page_through_while_creating(client, window, original, newcomer, 10)
    assert _skips_and_repeats(originals, seen) == ([], [])
    assert [id for id, n in Counter(seen).items() if n > 1] == []


def _goal(*due: str) -> dict[str, Any]:
    return {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "Kunna bo kvar hemma"},
        "subject": {"reference": "Patient/p1"},
        "target": [{"dueDate": d} for d in due],
    }


async def test_date_window_over_repeating_dates_gives_each_resource_once_across_pages(
    client: httpx.AsyncClient,
) -> None:
    """Goal.target.due repeats: a Goal with several due dates in the window is one match,
    and one due date on each side of the window matches too (each condition may be met by
    another value, as the spec has it)."""
    two_inside = await _create(client, _goal("2026-03-02", "2026-03-05"))
    one_inside = await _create(client, _goal("2026-03-04"))
    one_of_two = await _create(client, _goal("2026-02-01", "2026-03-06"))
    straddles = await _create(client, _goal("2026-02-01", "2026-04-01"))
    await _create(client, _goal("2026-04-01"))
    await _create(client, _goal("2026-02-27"))
    seen: list[str] = []
    url: str | None = "/Goal"
    query: Any = {"target-date": ["ge2026-03-01", "lt2026-03-08"], "_count": "1"}
    while url:
        bundle = await _search(client, url, query)
        seen += [id for mode, _, id in _entries(bundle) if mode == "match"]
        url, query = _link(bundle, "next"), None
        assert len(seen) < 20, "paging does not end"
    assert sorted(seen) == sorted([two_inside, one_inside, one_of_two, straddles])


async def test_tampered_paging_cursor_is_400_not_500(client: httpx.AsyncClient) -> None:
    from fhir_server.search.parser import encode_cursor

    positions = (
        {"key": [1, 2], "offset": 0},
        {"key": ["a"], "offset": 3},
        {"key": [], "offset": "x"},
    )
    for position in positions:
        for params in (
            {"birthdate": ["ge1950-01-01", "lt1951-01-01"]},
            {"_sort": "family"},
        ):
            response = await client.get(
                "/Patient", params={**params, "_cursor": encode_cursor(position)}
            )
            assert response.status_code in (200, 400), response.text
            assert response.headers["content-type"].startswith("application/fhir+json")


# --- 5. _summary and _elements ----------------------------------------------------------------

RICH_PATIENT = patient(
    "191212121212",
    "Tolvansson",
    text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Tolvan</div>'},
    photo=[{"contentType": "image/png", "data": "iVBORw0KGgo="}],
    contact=[{"name": {"family": "Anhörig"}, "telecom": [{"system": "phone", "value": "112"}]}],
    communication=[
        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "sv"}]}, "preferred": True}
    ],
)
SUMMARY_KEYS = {"resourceType", "id", "meta", "identifier", "name", "gender", "birthDate"}


async def test_summary_count_gives_the_total_and_no_entries(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    bundle = await _search(client, "/Patient", {"_summary": "count"})
    assert bundle["total"] == 3
    assert "entry" not in bundle
    assert _link(bundle, "next") is None
    small_page = await _search(client, "/Patient", {"_summary": "count", "_count": "1"})
    assert small_page["total"] == 3
    assert "entry" not in small_page
    assert _link(small_page, "next") is None


async def test_summary_true_on_search_keeps_only_summary_elements_and_tags_subsetted(
    client: httpx.AsyncClient,
) -> None:
    id = await _create(client, RICH_PATIENT)
    bundle = await _search(client, "/Patient", {"_summary": "true"})
    [entry] = bundle["entry"]
    resource = entry["resource"]
    assert entry["search"]["mode"] == "match"
    assert resource["id"] == id
    assert set(resource) == SUMMARY_KEYS  # text, photo, contact, communication dropped
    assert resource["name"] == RICH_PATIENT["name"]
    assert resource["identifier"] == RICH_PATIENT["identifier"]
    assert _is_subsetted(resource)
    assert resource["meta"]["versionId"] == "1"


async def test_summary_true_on_read_keeps_only_summary_elements_and_tags_subsetted(
    client: httpx.AsyncClient,
) -> None:
    id = await _create(client, RICH_PATIENT)
    response = await client.get(f"/Patient/{id}", params={"_summary": "true"})
    assert response.status_code == 200, response.text
    resource = response.json()
    assert set(resource) == SUMMARY_KEYS
    assert resource["gender"] == "male"
    assert resource["birthDate"] == "1912-12-12"
    assert _is_subsetted(resource)


async def test_summary_text_keeps_text_and_mandatory_elements(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    id = await _create(client, RICH_PATIENT)
    bundle = await _search(client, "/Patient", {"_id": id, "_summary": "text"})
    resource = bundle["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "text"}
    assert resource["text"] == RICH_PATIENT["text"]
    assert _is_subsetted(resource)
    # Observation.status and .code are mandatory (1..1): kept with the text.
    observation = await _search(client, "/Observation", {"_id": world["o1"], "_summary": "text"})
    assert set(observation["entry"][0]["resource"]) == {
        "resourceType",
        "id",
        "meta",
        "status",
        "code",
    }


async def test_summary_data_drops_only_the_text(client: httpx.AsyncClient) -> None:
    id = await _create(client, RICH_PATIENT)
    whole = (await client.get(f"/Patient/{id}")).json()
    bundle = await _search(client, "/Patient", {"_summary": "data"})
    resource = bundle["entry"][0]["resource"]
    assert set(resource) == set(RICH_PATIENT) - {"text"} | {"id", "meta"}
    assert {k: v for k, v in resource.items() if k != "meta"} == {
        k: v for k, v in whole.items() if k not in ("meta", "text")
    }
    assert _is_subsetted(resource)


async def test_elements_keeps_named_plus_id_meta_and_mandatory_and_tags_subsetted(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    id = await _create(client, RICH_PATIENT)
    bundle = await _search(client, "/Patient", {"_id": id, "_elements": "name,gender"})
    resource = bundle["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "name", "gender"}
    assert _is_subsetted(resource)
    read = (await client.get(f"/Patient/{id}", params={"_elements": "name,gender"})).json()
    assert set(read) == {"resourceType", "id", "meta", "name", "gender"}
    assert _is_subsetted(read)
    only_subject = {"_id": world["o1"], "_elements": "subject"}
    observation = await _search(client, "/Observation", only_subject)
    kept = observation["entry"][0]["resource"]
    assert set(kept) == {"resourceType", "id", "meta", "subject", "status", "code"}


async def test_unknown_summary_mode_is_400(client: httpx.AsyncClient) -> None:
    id = await _create(client, RICH_PATIENT)
    search = await client.get("/Patient", params={"_summary": "bogus"})
    assert search.status_code == 400, search.text
    assert search.json()["resourceType"] == "OperationOutcome"
    read = await client.get(f"/Patient/{id}", params={"_summary": "bogus"})
    assert read.status_code == 400, read.text


async def test_without_subsetting_stored_bytes_come_back_unchanged(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/Patient", json=RICH_PATIENT)
    assert created.status_code == 201
    id = created.json()["id"]
    read = await client.get(f"/Patient/{id}")
    assert read.content == created.content
    assert not _is_subsetted(read.json())
    for params in ({}, {"_summary": "false"}):
        bundle = await _search(client, "/Patient", params)
        resource = bundle["entry"][0]["resource"]
        assert resource == read.json()
        assert not _is_subsetted(resource)


# --- 6. _total --------------------------------------------------------------------------------


async def test_total_none_omits_total_and_accurate_or_estimate_give_it(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    none = await _search(client, "/Patient", {"_total": "none"})
    assert "total" not in none
    assert len(none["entry"]) == 3
    for mode in ("accurate", "estimate"):
        bundle = await _search(client, "/Patient", {"_total": mode, "_count": "1"})
        assert bundle["total"] == 3, mode
        assert len(bundle["entry"]) == 1


# --- 7. POST _search --------------------------------------------------------------------------


async def test_post_search_with_form_body_equals_get(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    params = [
        ("subject", f"Patient/{world['p1']}"),
        ("_include", "Observation:subject"),
        ("_total", "accurate"),
    ]
    got = await _search(client, "/Observation", params)
    posted = await client.post(
        "/Observation/_search",
        data=dict(params),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200, posted.text
    body = posted.json()
    expected = _e(world, "match", "o1", "o2") + _e(world, "include", "p1")
    _exactly(got, expected)
    _exactly(body, expected)
    assert body["total"] == got["total"] == 2
    assert body["type"] == "searchset"
    assert _link(body, "self") == _link(got, "self")


# --- 8. Lenient handling ----------------------------------------------------------------------


async def test_lenient_unknown_parameter_is_warned_and_left_out_of_self_link(
    client: httpx.AsyncClient, world: dict[str, str]
) -> None:
    params = [("family", "Tolvansson"), ("nonsense", "1")]
    bundle = await _search(client, "/Patient", params, headers={"Prefer": "handling=lenient"})
    matches = [e for e in _entries(bundle) if e[0] == "match"]
    assert matches == _e(world, "match", "p1")
    [outcome] = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    resource = outcome["resource"]
    assert resource["resourceType"] == "OperationOutcome"
    [issue] = resource["issue"]
    assert issue["severity"] == "warning"
    assert "nonsense" in issue.get("diagnostics", "") or "nonsense" in issue.get("expression", [])
    self_link = _link(bundle, "self")
    assert self_link is not None
    split = urlsplit(self_link)
    assert f"{split.scheme}://{split.netloc}{split.path}" == f"{BASE}/Patient"
    assert parse_qsl(split.query) == [("family", "Tolvansson")]
    assert bundle["total"] == 1
