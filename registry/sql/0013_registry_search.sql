-- What the registry API's list and search need at a city's size (100,000 wearers answered in
-- well under 200 ms; registry/store.py, benchmarks/registry_api.py). No pg_trgm: it is not
-- available everywhere, so names are searched by prefix (wearers_name, 0011) and substring
-- by a scan, and the exact keys (phone, device, ID card) through plain b-tree indexes.
CREATE INDEX IF NOT EXISTS wearers_phone ON wearers (phone) WHERE phone IS NOT NULL;
CREATE INDEX IF NOT EXISTS wearers_guardian_phone ON wearers (guardian_phone)
    WHERE guardian_phone IS NOT NULL;
-- Lookup by HMAC among deactivated wearers too (the unique index of 0011 covers active ones).
CREATE INDEX IF NOT EXISTS wearers_id_card_any ON wearers (id_card_hmac)
    WHERE id_card_hmac IS NOT NULL;

-- Why a wearer was deactivated, in the words of the clerk who did it (the reason is one of
-- three codes; the note says the rest: "moved to Qingdao with her son").
ALTER TABLE wearers ADD COLUMN IF NOT EXISTS deactivation_note text;
