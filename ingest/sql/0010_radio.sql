-- Radio scans (wire type radio, issue #10): the cell towers and Wi-Fi access points a device heard
-- without a GPS fix, as JSON arrays of {mcc, mnc, lac, cid, signal_dbm} and {mac, signal_dbm}
-- (never a network name). Evidence of where the wearer was, kept and erased with the other
-- readings. Nullable columns: free for every other row (docs/schema.md).
ALTER TABLE readings ADD COLUMN IF NOT EXISTS cells jsonb;
ALTER TABLE readings ADD COLUMN IF NOT EXISTS wifi jsonb;
