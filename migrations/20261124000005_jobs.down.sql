DROP TABLE cron_ticks;
DROP TABLE jobs;
