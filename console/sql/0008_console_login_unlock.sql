-- Lifting a console user's login lockout (issue #7; console/ratelimit.py, console/accounts.py).
--
-- Failed logins are counted in the service's memory, per account name and client address. An
-- admin lifts a lockout with `eldercare user unlock NAME` (another process) or the admin API
-- endpoint; the time of the last unlock is stored here, where the running service reads it
-- before refusing that name again, so both reach the same lockout. NULL: never unlocked.
ALTER TABLE console_users ADD COLUMN IF NOT EXISTS login_unlocked_at timestamptz;
