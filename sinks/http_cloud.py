"""httpx adapter of the ``CloudDirectory`` port for the cloud directory API.

Every write carries an ``Idempotency-Key`` derived from the operation id and the step, so a
re-applied operation (redelivery, replay, a worker killed mid-request) has no second effect.
httpx errors and HTTP statuses are translated here, once, into the vudsync error tree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from schemas.operations import (
    AssignAccess,
    CloudOperation,
    DeactivateUser,
    RegisterApplicationInstance,
    RemoveCatalogueEntry,
    RevokeAccess,
    UpsertCatalogueEntry,
    UpsertCompany,
    UpsertUser,
)
from sinks.errors import AuthenticationFailed, CloudRejected, CloudUnavailable, RateLimited
from sinks.ports import Applied

log = logging.getLogger(__name__)

_EXCERPT = 300
_SECRET_WORDS = ("secret", "token", "license_key", "password")


def _excerpt(response: httpx.Response) -> str:
    text = response.text[:_EXCERPT]
    return "(response withheld: it names a secret)" if any(w in text.lower() for w in _SECRET_WORDS) else text


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _Token:
    def __init__(self) -> None:
        self.value: str | None = None
        self.expires_at = 0.0


class HttpCloudDirectory:
    """Applies operations to the cloud directory API over HTTP (keep-alive, pooled)."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )
        self._client_id = client_id
        self._client_secret = client_secret
        self._token = _Token()
        self._token_lock = asyncio.Lock()
        self.token_requests = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- transport --------------------------------------------------------------------

    async def _fetch_token(self) -> str:
        self.token_requests += 1
        try:
            response = await self._client.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                    "scope": "directory:read directory:write",
                },
            )
        except httpx.HTTPError as exc:
            raise CloudUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from None
        if response.status_code in (400, 401, 403):
            raise AuthenticationFailed(
                f"the cloud refused the client credentials of {self._client_id!r} ({response.status_code})",
                retry_after=30.0,
                hint="check VUDSYNC_CLOUD_CLIENT_ID / VUDSYNC_CLOUD_CLIENT_SECRET",
            )
        if response.status_code >= 300:
            raise CloudUnavailable(f"token endpoint answered {response.status_code}")
        body = response.json()
        self._token.value = body["access_token"]
        self._token.expires_at = time.monotonic() + float(body.get("expires_in", 300)) - 30
        return str(self._token.value)

    async def _bearer(self, refresh: bool = False) -> str:
        async with self._token_lock:
            if refresh or self._token.value is None or time.monotonic() >= self._token.expires_at:
                return await self._fetch_token()
            return self._token.value

    async def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        params: dict[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One API call; 401 refreshes the token once. Returns 2xx and ``ok_statuses`` answers."""
        for attempt in (0, 1):
            headers = {"Authorization": f"Bearer {await self._bearer(refresh=attempt == 1)}"}
            if key is not None:
                headers["Idempotency-Key"] = key
            try:
                response = await self._client.request(method, path, headers=headers, json=json, params=params)
            except httpx.TimeoutException:
                raise CloudUnavailable(f"{method} {path}: timed out") from None
            except httpx.HTTPError as exc:
                raise CloudUnavailable(f"{method} {path}: {type(exc).__name__}") from None
            if response.status_code == 401 and attempt == 0:
                continue
            break
        status = response.status_code
        if status < 300 or status in ok_statuses:
            return response
        if status == 401:
            raise AuthenticationFailed("the cloud refused a fresh token", retry_after=30.0)
        if status == 429:
            raise RateLimited(f"{method} {path}: rate limited", retry_after=_retry_after(response))
        if status >= 500:
            raise CloudUnavailable(f"{method} {path}: {status}", retry_after=_retry_after(response))
        raise CloudRejected(
            f"{method} {path}: {status} {_excerpt(response)}", status=status, excerpt=_excerpt(response)
        )

    @staticmethod
    def _replayed(*responses: httpx.Response) -> bool:
        return bool(responses) and all(r.headers.get("Idempotent-Replayed") == "true" for r in responses)

    async def _find(self, collection: str, **params: str) -> dict[str, Any] | None:
        response = await self.request("GET", f"/v1/{collection}", params=params)
        items = response.json().get("items", [])
        return items[0] if items else None

    # -- operations -------------------------------------------------------------------

    async def apply(self, op: CloudOperation) -> Applied:
        if isinstance(op, UpsertUser):
            return await self._upsert_user(op)
        if isinstance(op, DeactivateUser):
            return await self._deactivate_user(op)
        if isinstance(op, UpsertCompany):
            return await self._upsert_company(op)
        if isinstance(op, AssignAccess):
            r = await self.request(
                "PUT",
                f"/v1/users/{op.cloud_user_id}/access/{op.cloud_company_id}",
                key=op.operation_id,
                json={
                    "services": {app.value: svc.model_dump(mode="json") for app, svc in op.services.items()}
                },
            )
            return Applied("assigned", op.cloud_user_id, self._replayed(r))
        if isinstance(op, RevokeAccess):
            r = await self.request(
                "DELETE",
                f"/v1/users/{op.cloud_user_id}/access/{op.cloud_company_id}",
                key=op.operation_id,
                ok_statuses=(404,),
            )
            return Applied("revoked" if r.status_code != 404 else "noop", op.cloud_user_id, self._replayed(r))
        if isinstance(op, UpsertCatalogueEntry):
            r = await self.request(
                "PUT",
                f"/v1/services/{op.application.value}/{op.catalogue}/{op.name}",
                key=op.operation_id,
                json={"description": op.description},
            )
            return Applied("published", None, self._replayed(r))
        if isinstance(op, RemoveCatalogueEntry):
            r = await self.request(
                "DELETE",
                f"/v1/services/{op.application.value}/{op.catalogue}/{op.name}",
                key=op.operation_id,
                ok_statuses=(404,),
            )
            return Applied("removed" if r.status_code != 404 else "noop", None, self._replayed(r))
        if isinstance(op, RegisterApplicationInstance):
            r = await self.request(
                "PUT",
                f"/v1/application-instances/{op.application.value}",
                key=op.operation_id,
                json={"uri": op.uri, "license_fingerprint": op.license_fingerprint},
            )
            return Applied(
                "registered",
                None,
                self._replayed(r),
                {"uri": op.uri, "license_fingerprint": op.license_fingerprint},
            )
        raise CloudRejected(f"no cloud mapping for {type(op).__name__}", status=0, excerpt="")

    async def _resolve_user(self, op: UpsertUser | DeactivateUser) -> tuple[dict[str, Any] | None, bool]:
        """The cloud user of this on-premise user: (user, linked-now?)."""
        if op.cloud_id:
            r = await self.request("GET", f"/v1/users/{op.cloud_id}", ok_statuses=(404,))
            if r.status_code != 404:
                return r.json(), False
        found = await self._find("users", external_id=op.entity_id)
        if found:
            return found, False
        found = await self._find("users", email=op.email)
        return found, found is not None

    async def _upsert_user(self, op: UpsertUser) -> Applied:
        user, matched = await self._resolve_user(op)
        fields = {
            "username": op.username,
            "email": op.email,
            "first_name": op.first_name,
            "last_name": op.last_name,
            "language": op.language,
        }
        responses: list[httpx.Response] = []
        effect = "noop"
        if user is None:
            r = await self.request(
                "POST",
                "/v1/users",
                key=f"{op.operation_id}:create",
                json={"external_id": op.entity_id, **fields},
                ok_statuses=(409,),
            )
            if r.status_code == 409:  # created meanwhile (by us or someone else): match by e-mail
                user, matched = await self._find("users", email=op.email), True
                if user is None:
                    raise CloudRejected(
                        f"user {op.entity_id}: e-mail conflict without a match",
                        status=409,
                        excerpt=_excerpt(r),
                    )
            else:
                responses.append(r)
                user, effect = r.json(), "created"
        assert user is not None
        if effect != "created":
            if matched or user.get("external_id") != op.entity_id:
                responses.append(
                    await self.request(
                        "POST",
                        f"/v1/users/{user['id']}/link",
                        key=f"{op.operation_id}:link",
                        json={"external_id": op.entity_id},
                    )
                )
                effect = "linked"
            if any(user.get(k) != v for k, v in fields.items()):
                responses.append(
                    await self.request(
                        "PATCH", f"/v1/users/{user['id']}", key=f"{op.operation_id}:update", json=fields
                    )
                )
                effect = "updated" if effect == "noop" else effect
        if bool(user.get("active", True)) != op.active:
            action = "reactivate" if op.active else "deactivate"
            responses.append(
                await self.request(
                    "POST", f"/v1/users/{user['id']}/{action}", key=f"{op.operation_id}:{action}"
                )
            )
            effect = f"{action}d" if effect == "noop" else f"{effect}+{action}d"
        return Applied(effect, user["id"], self._replayed(*responses))

    async def _deactivate_user(self, op: DeactivateUser) -> Applied:
        user, _ = await self._resolve_user(op)
        if user is None:
            return Applied("noop", None, False, {"reason": "no such user in the cloud"})
        r = await self.request("POST", f"/v1/users/{user['id']}/deactivate", key=op.operation_id)
        return Applied("deactivated", user["id"], self._replayed(r))

    async def _upsert_company(self, op: UpsertCompany) -> Applied:
        fields = {
            "name": op.name,
            "organisation_number": op.organisation_number,
            "country": op.country,
            "status": op.status,
        }
        company: dict[str, Any] | None = None
        if op.cloud_id:
            r = await self.request("GET", f"/v1/companies/{op.cloud_id}", ok_statuses=(404,))
            company = r.json() if r.status_code != 404 else None
        company = company or await self._find("companies", external_id=op.entity_id)
        responses: list[httpx.Response] = []
        details: dict[str, Any] = {}
        if company is None:
            existing = await self._find("companies", organisation_number=op.organisation_number)
            if existing is None:
                r = await self.request(
                    "POST",
                    "/v1/companies",
                    key=f"{op.operation_id}:create",
                    json={"external_id": op.entity_id, **fields},
                    ok_statuses=(409,),
                )
                if r.status_code != 409:
                    return Applied("created", r.json()["id"], self._replayed(r))
                existing = await self._find("companies", organisation_number=op.organisation_number)
                if existing is None:
                    raise CloudRejected(
                        f"company {op.entity_id}: conflict without a match", status=409, excerpt=_excerpt(r)
                    )
            # link to the cloud company with the same organisation number; never create a second
            responses.append(
                await self.request(
                    "POST",
                    f"/v1/companies/{existing['id']}/link",
                    key=f"{op.operation_id}:link",
                    json={"external_id": op.entity_id},
                )
            )
            differing = sorted(k for k in ("name", "country", "status") if existing.get(k) != fields[k])
            details = {"review": differing} if differing else {}
            return Applied("linked", existing["id"], self._replayed(*responses), details)
        if any(company.get(k) != v for k, v in fields.items()):
            r = await self.request(
                "PATCH", f"/v1/companies/{company['id']}", key=f"{op.operation_id}:update", json=fields
            )
            return Applied("updated", company["id"], self._replayed(r))
        return Applied("noop", company["id"], False)
