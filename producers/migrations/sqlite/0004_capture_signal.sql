-- Signals to the running producer (Debezium's signal table): `vudsync snapshot` inserts a
-- request, the producer claims it between batches, records its progress and when it is done.
-- The one table an operator's command writes; the producer reads no Kafka topic.
CREATE TABLE capture_signal (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL DEFAULT 'snapshot' CHECK (kind IN ('snapshot')),
    entities     TEXT NOT NULL,
    filter       TEXT,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    requested_at REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    position     INTEGER,
    emitted      INTEGER NOT NULL DEFAULT 0,
    total        INTEGER,
    error        TEXT
);
CREATE INDEX capture_signal_open ON capture_signal (status, id);
