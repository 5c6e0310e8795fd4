-- Which detection events have been folded into alerts (alerts/folder.py). The folder takes
-- unfolded events from this table rather than from memory, so an event stored just before a
-- crash or a failed fold is folded later, exactly once (the mark is set in the fold's own
-- transaction).
ALTER TABLE detection_events ADD COLUMN IF NOT EXISTS alerted_at timestamptz;
CREATE INDEX IF NOT EXISTS detection_events_unalerted ON detection_events (id)
    WHERE alerted_at IS NULL;
