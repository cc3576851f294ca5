DROP FUNCTION capacity_lock_quota_and_usage(uuid, uuid, uuid);
DROP FUNCTION capacity_quota_and_usage(uuid, uuid);
DROP FUNCTION capacity_lock_key(uuid, uuid);
