"""Realistic sample directory data: Norwegian names (æøå), valid organisation numbers.

Deterministic for a given seed, so the demo, tests and benchmarks are repeatable.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

FIRST_NAMES = (
    "Kari",
    "Ola",
    "Ingrid",
    "Lars",
    "Solveig",
    "Bjørn",
    "Åse",
    "Øystein",
    "Sigrid",
    "Håkon",
    "Marte",
    "Jørgen",
    "Ragnhild",
    "Tormod",
    "Siri",
    "Eirik",
    "Guro",
    "Ståle",
    "Liv",
    "Anders",
    "Ærlend",
    "Tove",
    "Magnus",
    "Nora",
    "Ådne",
    "Hedda",
    "Sindre",
    "Maja",
    "Øyvind",
    "Ronja",
    "Kjetil",
    "Vilde",
    "Per",
    "Astrid",
    "Jon",
    "Synnøve",
    "Knut",
    "Hanne",
    "Geir",
    "Ida",
    "Trond",
    "Ellinor",
    "Fredrik",
    "Birgit",
)
LAST_NAMES = (
    "Hansen",
    "Johansen",
    "Olsen",
    "Larsen",
    "Andersen",
    "Pedersen",
    "Nilsen",
    "Kristiansen",
    "Jensen",
    "Karlsen",
    "Johnsen",
    "Pettersen",
    "Eriksen",
    "Berg",
    "Haugen",
    "Hagen",
    "Bakke",
    "Dahl",
    "Lie",
    "Sæther",
    "Ødegård",
    "Solberg",
    "Strøm",
    "Bråten",
    "Kvåle",
    "Mæland",
    "Løvås",
    "Grønli",
    "Aasen",
    "Brækken",
    "Fjære",
    "Sødal",
    "Øvrebø",
    "Hågensen",
    "Tveit",
    "Myhre",
    "Nygård",
    "Årdal",
    "Kleppe",
)
COMPANY_WORDS = (
    "Fjord",
    "Nordlys",
    "Bølge",
    "Fjell",
    "Vidde",
    "Havbris",
    "Skog",
    "Elv",
    "Bre",
    "Dal",
    "Kyst",
    "Midnattsol",
    "Tind",
    "Skjær",
    "Lysglimt",
    "Granitt",
    "Sjøsprøyt",
    "Bjørkeli",
    "Måke",
    "Ørn",
)
COMPANY_KINDS = (
    "Regnskap",
    "Bygg",
    "Eiendom",
    "Transport",
    "Handel",
    "Consulting",
    "Fisk",
    "Energi",
    "Data",
    "Helse",
    "Marin",
    "Reiseliv",
)
COMPANY_FORMS = ("AS", "AS", "AS", "ASA", "ANS", "DA")

APPLICATIONS = ("business", "document_center", "reporting")
CATALOGUE: dict[str, dict[str, tuple[str, ...]]] = {
    "business": {
        "roles": ("Regnskapsfører", "Lønnsansvarlig", "Innkjøper", "Selger", "Administrator", "Revisor"),
        "layout_groups": ("Standard", "Økonomi", "Lager", "Salg"),
        "modules": ("GL", "AP", "AR", "PAY", "INV", "ORD"),
    },
    "document_center": {
        "roles": ("Godkjenner", "Arkivar", "Leser"),
        "layout_groups": ("Standard", "Fakturaflyt"),
        "modules": ("DOC", "WF", "ARC"),
    },
    "reporting": {
        "roles": ("Rapportleser", "Rapportdesigner"),
        "layout_groups": ("Standard", "Ledelse"),
        "modules": ("RPT", "BI"),
    },
}
_KIND_OF = {"roles": "role", "layout_groups": "layout_group", "modules": "module"}
_MOD11_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)


def organisation_number(rng: random.Random) -> str:
    """A 9-digit Norwegian organisation number with a valid mod-11 check digit."""
    while True:
        digits = [rng.choice((8, 9))] + [rng.randrange(10) for _ in range(7)]
        remainder = sum(d * w for d, w in zip(digits, _MOD11_WEIGHTS, strict=True)) % 11
        check = 0 if remainder == 0 else 11 - remainder
        if check != 10:  # 10 is not a valid check digit: draw again
            return "".join(map(str, digits)) + str(check)


def valid_organisation_number(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) != 9:
        return False
    remainder = sum(d * w for d, w in zip(digits[:8], _MOD11_WEIGHTS, strict=True)) % 11
    check = 0 if remainder == 0 else 11 - remainder
    return check == digits[8]


def ascii_local(text: str) -> str:
    """E-mail local part from a Norwegian name: æ→ae, ø→o, å→aa, other accents dropped."""
    text = text.lower().replace("æ", "ae").replace("ø", "o").replace("å", "aa")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if c.isalnum() or c in ".-")


@dataclass
class SampleDirectory:
    companies: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    access: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    catalogue: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    instances: list[tuple[str, str, str]] = field(default_factory=list)


def catalogue_rows() -> dict[str, list[tuple[str, str, str]]]:
    rows: dict[str, list[tuple[str, str, str]]] = {"roles": [], "layout_groups": [], "modules": []}
    for app, kinds in CATALOGUE.items():
        for kind, names in kinds.items():
            for name in names:
                rows[kind].append((app, name, f"{name} ({app})"))
    return rows


def make_company(rng: random.Random, index: int) -> dict[str, Any]:
    number = organisation_number(rng)
    spaced = f"{number[:3]} {number[3:6]} {number[6:]}" if rng.random() < 0.3 else number
    name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)} {rng.choice(COMPANY_FORMS)}"
    return {
        "id": f"c{index:05d}",
        "name": name,
        "organisation_number": spaced,
        "country": "NO",
        "status": "active",
    }


def make_user(rng: random.Random, index: int, domains: list[str]) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    local = f"{ascii_local(first)}.{ascii_local(last)}.{index}"
    return {
        "id": f"u{index:06d}",
        "username": local,
        "email": f"{local}@{rng.choice(domains)}",
        "first_name": first,
        "last_name": last,
        "language": rng.choice(("nb", "nb", "nb", "nn", "en")),
        "active": 1,
    }


def grants_for(
    rng: random.Random, user_id: str, company_ids: list[str], per_user: float
) -> Iterator[tuple[str, str, str, str, str]]:
    """Varied access: most users in one company, some in several; a role or more per application."""
    n_companies = max(1, min(len(company_ids), int(rng.expovariate(1 / per_user)) + 1))
    for company_id in rng.sample(company_ids, n_companies):
        for app in rng.sample(APPLICATIONS, rng.randint(1, len(APPLICATIONS))):
            for kind, names in CATALOGUE[app].items():
                picks = rng.sample(names, rng.randint(1 if kind == "roles" else 0, 2))
                for name in picks:
                    yield (user_id, company_id, app, _KIND_OF[kind], name)


def grants_sized(
    rng: random.Random, user_id: str, company_ids: list[str], rows: float
) -> list[tuple[str, str, str, str, str]]:
    """About ``rows`` access rows on average (at least one, a role): few companies per user,
    roles, layout groups and modules mixed. Used where the access-table size matters."""
    wanted = 1 + int(rng.expovariate(1 / max(rows - 0.5, 0.01)))
    n_companies = max(1, min(len(company_ids), wanted, 1 + int(rng.expovariate(2.0))))
    chosen = rng.sample(company_ids, n_companies)
    app = rng.choice(APPLICATIONS)
    out = {(user_id, chosen[0], app, "role", rng.choice(CATALOGUE[app]["roles"]))}
    for _ in range(wanted * 3):  # bounded: small catalogues run out of distinct rows
        if len(out) >= wanted:
            break
        app = rng.choice(APPLICATIONS)
        kind = rng.choices(("roles", "layout_groups", "modules"), weights=(2, 1, 1))[0]
        out.add((user_id, rng.choice(chosen), app, _KIND_OF[kind], rng.choice(CATALOGUE[app][kind])))
    return sorted(out)


def sample_directory(
    users: int,
    companies: int,
    *,
    seed: int = 7,
    companies_per_user: float = 1.5,
    access_per_user: float | None = None,
) -> SampleDirectory:
    """``access_per_user`` (average access rows per user) replaces the default, richer access."""
    rng = random.Random(seed)
    out = SampleDirectory(catalogue=catalogue_rows())
    out.companies = [make_company(rng, i + 1) for i in range(companies)]
    domains = [ascii_local(c["name"].split()[0]) + ".no" for c in out.companies[:50]] or ["example.no"]
    company_ids = [c["id"] for c in out.companies]
    for i in range(users):
        user = make_user(rng, i + 1, domains)
        out.users.append(user)
        if company_ids and access_per_user is not None:
            out.access.extend(grants_sized(rng, user["id"], company_ids, access_per_user))
        elif company_ids:
            out.access.extend(grants_for(rng, user["id"], company_ids, companies_per_user))
    out.instances = [
        (
            app,
            f"https://{app.replace('_', '-')}.vud.local",
            f"LIC-{app[:3].upper()}-{rng.randrange(10**12):012d}",
        )
        for app in APPLICATIONS
    ]
    return out


def write_sample(
    writer: Any,
    sample: SampleDirectory,
    batch: int = 5000,
    progress: Callable[[str, int], None] | None = None,
) -> None:
    """Write a sample directory through a directory writer, in batched transactions.

    ``progress(what, rows)`` is called after each batch ('catalogue', 'companies', 'users',
    'access') with the number of rows just written."""
    report = progress or (lambda _what, _rows: None)
    with writer.transaction():
        for table, rows in sample.catalogue.items():
            writer.upsert_catalogue(table, rows)
        for app, uri, key in sample.instances:
            writer.set_application_instance(app, uri, key)
    report("catalogue", sum(len(r) for r in sample.catalogue.values()) + len(sample.instances))
    for start in range(0, len(sample.companies), batch):
        writer.upsert_companies(sample.companies[start : start + batch])
        report("companies", len(sample.companies[start : start + batch]))
    for start in range(0, len(sample.users), batch):
        writer.upsert_users(sample.users[start : start + batch])
        report("users", len(sample.users[start : start + batch]))
    for start in range(0, len(sample.access), batch):
        writer.grant(sample.access[start : start + batch])
        report("access", len(sample.access[start : start + batch]))
    writer.analyze()  # a bulk load leaves PostgreSQL without statistics (see its writer)
