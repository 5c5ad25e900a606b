"""OAuth2 client credentials: clients, secrets, bearer tokens and scopes.

* Client secrets are stored as salted PBKDF2-SHA256 hashes, compared in constant time.
* Tokens are random opaque strings (256 bits); only their SHA-256 is stored.
* Nothing here logs or returns a secret or a token, except the token response itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cloud.errors import ApiError
from cloud.store import Store, iso

READ = "directory:read"
WRITE = "directory:write"
ALL_SCOPES: tuple[str, ...] = (READ, WRITE)


@dataclass(frozen=True, slots=True)
class Principal:
    """The client a request is made by, with the scopes its token carries."""

    client_id: str
    scopes: frozenset[str]
    is_customer_admin: bool
    expires_at: float


def hash_secret(secret: str, iterations: int, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8", "surrogatepass"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    candidate = hash_secret(secret, int(iterations), bytes.fromhex(salt))
    return hmac.compare_digest(candidate.split("$")[3], digest)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scope(scope: str | None, allowed: Iterable[str]) -> frozenset[str]:
    """The scopes to grant: all allowed ones when none are asked for."""
    allowed_set = frozenset(allowed)
    if scope is None or not scope.strip():
        return allowed_set
    asked = frozenset(scope.split())
    if not asked <= allowed_set:
        raise ApiError(400, "invalid_scope", "the requested scope is not granted to this client")
    return asked


def _invalid_token(description: str) -> ApiError:
    return ApiError(
        401,
        "invalid_token",
        description,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'},
    )


class Authenticator:
    """Issues and checks tokens. Thread-safe; a token cache spares a read per request."""

    def __init__(self, store: Store, clock: Callable[[], float], ttl_seconds: float, iterations: int) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl_seconds
        self._iterations = iterations
        self._cache: dict[str, Principal] = {}
        self._cache_lock = threading.Lock()
        # compared against when the client id is unknown, so timing does not tell
        self._dummy_hash = hash_secret(secrets.token_urlsafe(16), iterations)

    # -- clients ---------------------------------------------------------------------

    def ensure_client(
        self, client_id: str, secret: str, *, is_customer_admin: bool, scopes: Iterable[str]
    ) -> None:
        """Create or update the configured client (start-up)."""
        secret_hash = hash_secret(secret, self._iterations)
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO clients (client_id, secret_hash, is_customer_admin, scopes, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(client_id) DO UPDATE SET"
                " secret_hash = excluded.secret_hash,"
                " is_customer_admin = excluded.is_customer_admin, scopes = excluded.scopes",
                (client_id, secret_hash, int(is_customer_admin), " ".join(scopes), iso(self._clock())),
            )

    def add_client(
        self, client_id: str, secret: str, *, is_customer_admin: bool, scopes: Iterable[str]
    ) -> None:
        """Add a client; 409 if the id is taken."""
        secret_hash = hash_secret(secret, self._iterations)
        with self._store.transaction() as conn:
            exists = conn.execute("SELECT 1 FROM clients WHERE client_id = ?", (client_id,)).fetchone()
            if exists:
                raise ApiError(409, "conflict", "a client with this id exists")
            conn.execute(
                "INSERT INTO clients (client_id, secret_hash, is_customer_admin, scopes, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (client_id, secret_hash, int(is_customer_admin), " ".join(scopes), iso(self._clock())),
            )

    # -- tokens ----------------------------------------------------------------------

    def issue_token(self, client_id: str, secret: str, scope: str | None) -> dict[str, object]:
        """The client-credentials grant: a token response, or 401 ``invalid_client``."""
        row = (
            self._store.reader()
            .execute(
                "SELECT secret_hash, is_customer_admin, scopes FROM clients WHERE client_id = ?",
                (client_id,),
            )
            .fetchone()
        )
        stored = row["secret_hash"] if row is not None else self._dummy_hash
        if not verify_secret(secret, stored) or row is None:
            raise ApiError(401, "invalid_client", "client authentication failed")
        scopes = parse_scope(scope, row["scopes"].split())
        token = secrets.token_urlsafe(32)
        now = self._clock()
        expires_at = now + self._ttl
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM tokens WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO tokens (token_hash, client_id, scopes, expires_at) VALUES (?, ?, ?, ?)",
                (hash_token(token), client_id, " ".join(sorted(scopes)), expires_at),
            )
        principal = Principal(client_id, scopes, bool(row["is_customer_admin"]), expires_at)
        with self._cache_lock:
            if len(self._cache) > 10_000:
                self._cache = {h: p for h, p in self._cache.items() if p.expires_at > now}
            self._cache[hash_token(token)] = principal
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(self._ttl),
            "scope": " ".join(sorted(scopes)),
        }

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer`` header, or 401 ``invalid_token``."""
        if not authorization:
            raise _invalid_token("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _invalid_token("the Authorization header is not a bearer token")
        token_hash = hash_token(token)
        with self._cache_lock:
            principal = self._cache.get(token_hash)
        if principal is None:
            row = (
                self._store.reader()
                .execute(
                    "SELECT t.client_id, t.scopes, t.expires_at, c.is_customer_admin FROM tokens t"
                    " JOIN clients c ON c.client_id = t.client_id WHERE t.token_hash = ?",
                    (token_hash,),
                )
                .fetchone()
            )
            if row is None:
                raise _invalid_token("unknown token")
            principal = Principal(
                row["client_id"],
                frozenset(row["scopes"].split()),
                bool(row["is_customer_admin"]),
                float(row["expires_at"]),
            )
            with self._cache_lock:
                self._cache[token_hash] = principal
        if self._clock() >= principal.expires_at:
            with self._cache_lock:
                self._cache.pop(token_hash, None)
            raise _invalid_token("token expired")
        return principal


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise ApiError(
            403,
            "insufficient_scope",
            f"this operation requires the scope {scope}",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )


def check_admin_token(given: str | None, expected: str) -> None:
    if given is None or not hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    ):
        raise ApiError(401, "invalid_admin_token", "a valid X-Admin-Token header is required")
