"""Keyed fingerprints of secrets, so that secrets can be compared without being carried."""

from __future__ import annotations

import hashlib
import hmac


def license_fingerprint(license_key: str, key: bytes) -> str:
    """HMAC-SHA256 of a license key under the installation's fingerprint key.

    Keyed, so that a fingerprint seen in a topic cannot be brute-forced offline without
    the installation's key. Whitespace around the key is not significant.
    """
    digest = hmac.new(key, license_key.strip().encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"
