"""httpx adapter that reads the whole cloud directory for verify (read-only scope).

Users and companies are read page by page (``after`` = the previous page's ``next_after``)
until the cloud says the page was the last: any number of them, never a truncated list.
Users' access lists are fetched through ``POST /v1/batch`` (500 GETs per request) instead of
one request per user. Tokens: :class:`kernel.auth.ClientCredentials`. httpx errors and HTTP
statuses become vudsync errors here, once; secrets never appear in them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from sys import intern
from typing import Any

import httpx
from pydantic import SecretStr

from kernel.auth import reading_client
from kernel.errors import AuthenticationFailed, PermanentError, RetryableError, VudsyncError
from schemas.directory import EntityType
from vudsync.ops.drift import CatalogueKey, CloudState

PAGE = 10_000  # the API's largest page
_BATCH = 500


def all_pages(
    get: Callable[[str, Mapping[str, Any]], Any],
    path: str,
    keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every item of a paged collection, following ``next_after`` to the last page.

    ``get(path, params)`` returns a page's JSON; verify and connect each bring their own.
    ``keep``: what to keep of each item, as each page arrives."""
    items: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = get(path, {"limit": PAGE, "after": after})
        items.extend(page["items"] if keep is None else map(keep, page["items"]))
        after = page.get("next_after")
    return items


#: what verify compares and repairs of a cloud user; the rest (timestamps, the administrator
#: flag) is dropped as each page arrives
_USER_FIELDS = (
    "id",
    "external_id",
    "email",
    "username",
    "first_name",
    "last_name",
    "language",
    "active",
    "version",
)


def slim_user(user: dict[str, Any]) -> dict[str, Any]:
    return {k: user[k] for k in _USER_FIELDS if k in user}


def slim_access(item: dict[str, Any]) -> dict[str, Any]:
    """What verify compares of one access item: the services (names interned: the same few
    role names recur across 100,000 users), the cloud-origin entries only (the directory's
    are the services), the version (a repair's digest)."""
    services = {
        intern(app): {intern(kind): [intern(n) for n in names] for kind, names in svc.items() if names}
        for app, svc in (item.get("services") or {}).items()
    }
    slim: dict[str, Any] = {
        "company_id": intern(str(item.get("company_id"))),
        "services": services,
        "version": item.get("version"),
    }
    from_cloud = [e for e in item.get("entries") or () if e.get("origin") == "cloud"]
    if from_cloud:
        slim["entries"] = [{k: e.get(k) for k in ("service", "kind", "name", "origin")} for e in from_cloud]
    return slim


class CloudReadError(RetryableError):
    """The cloud did not answer a read (network, 5xx, 429)."""


class HttpCloudReader:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = reading_client(
            base_url,
            client_id,
            client_secret,
            timeout=30.0,
            token_error=lambda r: self._error(r, "POST /oauth/token"),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CloudReadError(
                f"{method} {path}: {type(exc).__name__}",
                hint="is the cloud reachable? check VUDSYNC_CLOUD_URL",
            ) from None
        except AuthenticationFailed as exc:  # verify cannot go on; another try would fail alike
            raise PermanentError(str(exc), hint=exc.hint) from None

    @staticmethod
    def _error(r: httpx.Response, what: str) -> VudsyncError:
        if r.status_code == 429 or r.status_code >= 500:
            return CloudReadError(
                f"{what}: {r.status_code}", retry_after=None, hint="the cloud is failing: try again"
            )
        return PermanentError(f"{what}: {r.status_code}")

    @classmethod
    def _check(cls, r: httpx.Response, what: str) -> None:
        if r.status_code >= 300:
            raise cls._error(r, what)

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        r = self._send("GET", path, params=params)
        self._check(r, f"GET {path}")
        return r.json()

    def _all(self, path: str) -> list[dict[str, Any]]:
        return all_pages(self._get, path)

    def _access(self, user_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for i in range(0, len(user_ids), _BATCH):
            chunk = user_ids[i : i + _BATCH]
            r = self._send(
                "POST",
                "/v1/batch",
                json={"requests": [{"method": "GET", "path": f"/v1/users/{uid}/access"} for uid in chunk]},
            )
            self._check(r, "POST /v1/batch")
            for uid, answer in zip(chunk, r.json()["responses"], strict=True):
                if answer["status"] >= 300:
                    raise CloudReadError(f"GET /v1/users/{uid}/access in a batch: {answer['status']}")
                out[uid] = [slim_access(item) for item in answer["body"]["items"]]
        return out

    def read_one(self, entity: EntityType, external_id: str) -> CloudState:
        """What the cloud holds of one user (with its access and the companies that names) or
        one company, matched by external id: a slice of :meth:`read` for ``drift.compare``."""
        if entity is EntityType.USER:
            users = self._get("/v1/users", {"external_id": external_id})["items"]
            access = {u["id"]: self._get(f"/v1/users/{u['id']}/access")["items"] for u in users}
            named = sorted({str(a["company_id"]) for items in access.values() for a in items})
            companies = [self._get(f"/v1/companies/{cid}") for cid in named]
            return CloudState(users, companies, access, {}, {})
        companies = self._get("/v1/companies", {"external_id": external_id})["items"]
        return CloudState([], companies, {}, {}, {})

    def read(self) -> CloudState:
        users = all_pages(self._get, "/v1/users", slim_user)
        companies = self._all("/v1/companies")
        linked = [u["id"] for u in users if u.get("external_id")]
        access = self._access(linked)
        catalogue: dict[CatalogueKey, str | None] = {}
        for service in self._get("/v1/services")["items"]:
            for kind in ("roles", "layout_groups", "modules"):
                for entry in service.get(kind) or []:
                    catalogue[(service["service"], kind, entry["name"])] = entry.get("description")
        instances = {i["service"]: i for i in self._get("/v1/application-instances")["items"]}
        return CloudState(users, companies, access, catalogue, instances)
