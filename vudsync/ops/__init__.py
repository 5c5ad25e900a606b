"""Operations: what the people who run vudsync touch every day.

``vudsync status | replay | dlq | journal | verify`` are thin click shells in
``vudsync.commands``; the logic lives here, one module per concern, pure decision logic
apart from the adapters that talk to Kafka, SQLite and HTTP:

| concern | pure logic | adapters |
| --- | --- | --- |
| time and duration arguments | :mod:`~vudsync.ops.timespec` | |
| consumer groups, topics | :mod:`~vudsync.ops.groups` | :mod:`~vudsync.ops.kafka_admin` |
| reading topic ranges | | :mod:`~vudsync.ops.kafka_reader` |
| replay | :mod:`~vudsync.ops.replay` | :mod:`~vudsync.ops.replay_runner` |
| dead letters | :mod:`~vudsync.ops.deadletters` | :mod:`~vudsync.ops.dlq_kafka` |
| the event journal | :mod:`~vudsync.ops.journal` | ``journal_index`` (SQLite), ``journal_sync`` (Kafka) |
| drift check | :mod:`~vudsync.ops.drift` | ``directory_reader``, ``cloud_reader``, ``verify_runner`` |
| status | :mod:`~vudsync.ops.status` | :mod:`~vudsync.ops.metrics_scrape` |

Nothing happens at import; each command builds what it needs from one ``Settings``.
"""
