DROP TABLE login_throttle;
DROP TABLE users;
DROP TABLE departments;
DROP TABLE fields;
DROP TABLE sites;
