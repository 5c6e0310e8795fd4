-- Routing, escalation and delivery of alerts (issue #5; docs/alerts.md).
--
-- The escalation timer lives in the alert row: ``next_action_at`` is when the escalator must
-- look at it again (the next ladder step, or the end of a claim). Advancing it and writing the
-- step's deliveries happen in one transaction, so a restart neither loses nor repeats a step.
-- ``policy`` is the routing policy snapshotted when the alert opened: editing the policy file
-- never changes a running escalation.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS policy jsonb;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS step integer NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS cycle integer NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS next_action_at timestamptz;
CREATE INDEX IF NOT EXISTS alerts_next_action ON alerts (next_action_at)
    WHERE next_action_at IS NOT NULL;

-- Registry additions for routing: a contact's e-mail, language and channels.
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS email text;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS language text NOT NULL DEFAULT 'zh';
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS channels text[] NOT NULL DEFAULT '{sms}';

-- The transactional outbox: one row per message to one recipient over one channel. Written in
-- the transaction that opens or escalates the alert; sent by the channel's delivery worker,
-- retried with backoff, each attempt in alert_audit. ``idempotency_key`` is stable across
-- retries so receivers deduplicate (at-least-once delivery).
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id               bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id         bigint       NOT NULL REFERENCES alerts (id),
    kind             text         NOT NULL,  -- notify (a ladder step) or state (a change)
    recipient        text         NOT NULL,  -- dispatch, family:1, community, ...
    channel          text         NOT NULL,  -- webhook, sms, voice, email, mqtt
    address          text         NOT NULL,  -- URL, E.164 number, e-mail address, topic
    language         text         NOT NULL DEFAULT 'zh',
    priority         integer      NOT NULL,
    body             jsonb        NOT NULL,  -- the alert document sent (docs/alerts.md)
    idempotency_key  text         NOT NULL UNIQUE,
    status           text         NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled', 'suppressed',
                          'grouped')),
    attempts         integer      NOT NULL DEFAULT 0,
    created_at       timestamptz  NOT NULL,
    next_attempt_at  timestamptz  NOT NULL,
    lease_until      timestamptz,
    sent_at          timestamptz,
    receipt          jsonb,
    last_error       text,
    group_key        text,                   -- low-priority grouping (one message per wearer)
    grouped_into     bigint REFERENCES alert_deliveries (id)
);
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (channel, priority, next_attempt_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS alert_deliveries_alert ON alert_deliveries (alert_id);
