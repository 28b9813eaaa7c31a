-- Sample data for scripts/demo: two subnets and a handful of reservations.
INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain, lease_time)
VALUES ('office', '10.20.0.0/24', '10.20.0.100', '10.20.0.199', '10.20.0.1', 'office.example', '12 hours'),
       ('lab',    '10.30.0.0/24', NULL, NULL, '10.30.0.1', 'lab.example', NULL);

INSERT INTO ipmanager.hosts (mac, ip, hostname, comment) VALUES
  ('02:00:5e:10:00:01', '10.20.0.10', 'printer',   'second floor'),
  ('02:00:5e:10:00:02', '10.20.0.11', 'nas',       NULL),
  ('02:00:5e:10:00:03', '10.20.0.12', 'voip-gw',   NULL),
  ('02:00:5e:10:00:04', '10.30.0.20', 'scope',     'oscilloscope'),
  ('02:00:5e:10:00:05', '10.30.0.21', 'buildbot',  NULL);
