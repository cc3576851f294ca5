DROP TABLE department_quotas;
DROP TABLE servers;
