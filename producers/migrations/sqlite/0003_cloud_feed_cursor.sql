-- cloud-capture (issue 16) keeps its place in the cloud's change feed next to the producer's
-- checkpoint: row name 'cloud-capture', phase 'streaming', seq the feed position of the
-- newest item read; the feed's cursor is an opaque string, kept here as the API gave it.
ALTER TABLE capture_checkpoint ADD COLUMN cursor TEXT;
