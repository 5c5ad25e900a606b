"""kafka-python's admin client logs its configuration at DEBUG: the copy logged has the SASL
and SSL key passwords masked (the secured run's secret scan found the password there)."""

from __future__ import annotations

import logging

import pytest

from kernel.admin import HideClientSecrets, hide_client_secrets


def test_the_admin_clients_logged_configuration_has_no_password(caplog: pytest.LogCaptureFixture) -> None:
    hide_client_secrets()
    hide_client_secrets()  # idempotent: one filter
    logger = logging.getLogger("kafka.admin.client")
    assert sum(isinstance(f, HideClientSecrets) for f in logger.filters) == 1
    configs = {"sasl_plain_username": "vudsync-ops", "sasl_plain_password": "s3cr3t-pw"}
    configs["ssl_password"] = "k3y-pw"
    with caplog.at_level(logging.DEBUG, logger="kafka.admin.client"):
        logger.debug("Starting KafkaAdminClient with configuration: %s", configs)  # kafka-python's call
        logger.debug("two arguments %s %s", configs, "x")
    text = caplog.text
    assert "s3cr3t-pw" not in text and "k3y-pw" not in text
    assert text.count("vudsync-ops") == 2 and "**********" in text
    assert configs["sasl_plain_password"] == "s3cr3t-pw"  # the client's own configuration is untouched
