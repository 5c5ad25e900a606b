"""The kernel: what every runtime package of vudsync may use, and nothing else of ours.

Settings, the one error tree, Kafka records and admin, the record publisher port and its
adapters, the SQLite WAL helper. It imports no other vudsync package; the layers above it are
``schemas`` → ``producers`` | ``processors`` | ``sinks`` → ``vudsync.ops`` → the CLI and
``devtools`` (enforced by import-linter in ``make test``; see docs/architecture.md).
"""
