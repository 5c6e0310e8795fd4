-- The enrolment clerk (issue #12): staff who enrol wearers and devices in their regions, and do
-- not act on alerts. Role permissions are in docs/registry-database.md ("Roles").
ALTER TABLE console_users DROP CONSTRAINT IF EXISTS console_users_role_check;
ALTER TABLE console_users ADD CONSTRAINT console_users_role_check
    CHECK (role IN ('officer', 'supervisor', 'admin', 'clerk'));
