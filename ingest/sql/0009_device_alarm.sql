-- Device alarms (wire type device_alarm, issue #10): what a vendor device raised itself that no
-- other reading type carries (its low-battery or fence flag, a power cut, a cover opened), and
-- the vendor's code as evidence. Nullable columns: free for every other row (docs/schema.md).
ALTER TABLE readings ADD COLUMN IF NOT EXISTS alarm text;
ALTER TABLE readings ADD COLUMN IF NOT EXISTS code text;
