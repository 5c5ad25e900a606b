"""What ``vudsync snapshot`` accepts: entity names, ``--where``, their combination. Pure."""

from __future__ import annotations

import pytest

from producers.signals import SNAPSHOT_ORDER, FilterError, Where, check_where, parse_entities, parse_where
from schemas.directory import EntityType


def test_entities_come_in_snapshot_order_and_none_means_all() -> None:
    assert parse_entities(("users", "companies")) == (EntityType.COMPANY, EntityType.USER)
    assert parse_entities(()) == SNAPSHOT_ORDER and set(SNAPSHOT_ORDER) == set(EntityType)
    with pytest.raises(FilterError, match="unknown entity groups"):
        parse_entities(("groups",))


def test_where_reads_id_lists_and_one_company() -> None:
    assert parse_where(None) is None
    assert parse_where("id=u1, u2") == Where("id", ("u1", "u2"))
    assert parse_where("company=c1") == Where("company", ("c1",))
    assert parse_where("company=c1").text() == "company=c1"  # type: ignore[union-attr]
    for wrong in ("email=a@b.no", "company=c1,c2", "id=", "u1"):
        with pytest.raises(FilterError):
            parse_where(wrong)


def test_company_filter_applies_to_users_and_companies_only() -> None:
    check_where(Where("company", ("c1",)), (EntityType.COMPANY, EntityType.USER))
    check_where(Where("id", ("business:Lønn",)), (EntityType.ROLE,))
    with pytest.raises(FilterError, match="not roles"):
        check_where(Where("company", ("c1",)), (EntityType.ROLE, EntityType.USER))
