"""A stand-in for ``vudsync run cloud-capture`` in tests: follows the reference cloud's change
feed over HTTP and publishes one :class:`CloudAccessChanged` per access item, as the contract
(``schemas/cloud_changes.py``) says cloud-capture does — so the writeback side can be tested
before, and apart from, the real component. Switch a test to the real one by starting
``cloud-capture`` among its components instead of calling :meth:`FeedRelay.pump`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kernel.publishing.confluent import ConfluentRecordPublisher
from kernel.settings import Settings
from schemas.cloud_changes import CloudAccessChanged, CloudAccessEntry
from schemas.codec import encode
from schemas.topics import CLOUD_CHANGES
from tests.fixtures.cloud import CloudReader

_KIND = {"roles": "role", "layout_groups": "layout_group", "modules": "module"}


class FeedRelay:
    """``GET /v1/changes`` from a cursor taken at construction; :meth:`pump` relays what came."""

    def __init__(self, cloud: CloudReader, settings: Settings, bootstrap: str) -> None:
        self.cloud = cloud
        self.topic = settings.topic(CLOUD_CHANGES.name)
        self.publisher = ConfluentRecordPublisher(
            bootstrap, client_id="test-feed-relay", security=settings.kafka_security()
        )
        self.cursor = self._get()["cursor"]
        self.published: list[CloudAccessChanged] = []

    def _get(self, **params: Any) -> dict[str, Any]:
        response = self.cloud.client.get("/v1/changes", params=params)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def pump(self) -> bool:
        """Relay every change after the cursor (flushed: acknowledged); True (for ``until=``)."""
        while True:
            page = self._get(cursor=self.cursor, limit=100)
            for item in page["items"]:
                if item["resource_type"] == "access":
                    change = self._change(item)
                    if change is not None:
                        self.publisher.publish(self.topic, change.user_id, encode(change))
                        self.published.append(change)
            self.publisher.flush()
            self.cursor = page["cursor"]
            if not page["more"]:
                return True

    def _external(self, collection: str, cloud_id: str) -> str | None:
        response = self.cloud.client.get(f"/v1/{collection}/{cloud_id}")
        return response.json().get("external_id") if response.status_code == 200 else None

    def _change(self, item: dict[str, Any]) -> CloudAccessChanged | None:
        cloud_user, cloud_company = item["resource_id"].split("/", 1)
        user, company = self._external("users", cloud_user), self._external("companies", cloud_company)
        if not user or not company:
            return None  # not linked: cloud-capture journals it as unlinked
        state = item["state"] or {}
        entries = sorted(
            (
                CloudAccessEntry(
                    application=e["service"],
                    kind=_KIND[e["kind"]],  # type: ignore[arg-type]
                    name=e["name"],
                    origin=e["origin"],
                    modified_at=datetime.fromisoformat(e["modified_at"]),
                )
                for e in state.get("entries", ())
            ),
            key=lambda e: (e.application.value, e.kind, e.name),
        )
        return CloudAccessChanged(
            event_id=CloudAccessChanged.make_event_id(item["seq"], user, company),
            feed_seq=item["seq"],
            user_id=user,
            company_id=company,
            cloud_user_id=cloud_user,
            cloud_company_id=cloud_company,
            deleted=item["change"] == "deleted",
            entries=tuple(entries),
            changed_at=datetime.fromisoformat(item["at"]),
        )

    def close(self) -> None:
        self.publisher.close()
