-- cloud-capture (issue 16) keeps, with its feed cursor, the cloud users and companies it knew
-- as not linked at that position (a JSON list of 'user:<cloud id>' / 'company:<cloud id>'):
-- a link made while it was down is followed by a read of their access after the restart.
ALTER TABLE capture_checkpoint ADD COLUMN unlinked TEXT;
