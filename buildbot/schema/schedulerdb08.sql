-- Buildbot 0.8.x scheduler database: the tables a 0.8 master reads and writes
-- for build requests, as bbb's scheduler-DB adapter and the legacy-master
-- simulator use them.  Written from the Buildbot 0.8 model (buildbot/db/model.py,
-- 0.8.2 to 0.8.6) and the fixture of Mozilla's buildbot-bridge tests.
--
-- Times are integer epoch seconds.  Result codes: 0 SUCCESS, 1 WARNINGS,
-- 2 FAILURE, 3 SKIPPED, 4 EXCEPTION, 5 RETRY, 6 CANCELLED (CANCELLED existed in
-- Mozilla's fork, upstream 0.8 cancelled with FAILURE).
--
-- Production masters of that era used MyISAM (no transactions).  These
-- tables are created as InnoDB so that an injection is one transaction, the
-- adapter also inserts the build request last, so that on MyISAM a failed
-- injection leaves no runnable request behind.
--
-- Statements are separated by a semicolon at the end of a line, comments
-- start with two dashes (bbb_buildbot::schema splits the file that way).

CREATE TABLE IF NOT EXISTS sourcestamps (
  id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
  branch VARCHAR(256) DEFAULT NULL,      -- NULL means the default branch
  revision VARCHAR(256) DEFAULT NULL,    -- NULL means the latest revision
  patchid INTEGER DEFAULT NULL,
  repository VARCHAR(512) NOT NULL DEFAULT '',
  project VARCHAR(512) NOT NULL DEFAULT ''
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS buildsets (
  id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
  external_idstring VARCHAR(256),        -- bbb writes 'taskId:<taskId>'
  reason VARCHAR(256),
  sourcestampid INTEGER NOT NULL,        -- 0.8.7 and later: sourcestampsetid
  submitted_at INTEGER NOT NULL,
  complete SMALLINT NOT NULL DEFAULT 0,
  complete_at INTEGER,
  results SMALLINT,
  KEY buildsets_complete (complete),
  KEY buildsets_submitted_at (submitted_at)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS buildset_properties (
  buildsetid INTEGER NOT NULL,
  property_name VARCHAR(256) NOT NULL,
  property_value VARCHAR(1024) NOT NULL, -- JSON [value, source]
  KEY buildset_properties_buildsetid (buildsetid)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS buildrequests (
  id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
  buildsetid INTEGER NOT NULL,
  buildername VARCHAR(256) NOT NULL,     -- by name (Buildbot 0.9 and later: builderid)
  priority INTEGER NOT NULL DEFAULT 0,
  claimed_at INTEGER DEFAULT 0,          -- 0 or NULL: unclaimed, refreshed while running
  claimed_by_name VARCHAR(256) DEFAULT NULL,        -- the master, 'hostname:basedir'
  claimed_by_incarnation VARCHAR(256) DEFAULT NULL, -- the master's boot time and pid
  complete INTEGER DEFAULT 0,
  results SMALLINT,
  submitted_at INTEGER NOT NULL,
  complete_at INTEGER,
  KEY buildrequests_buildsetid (buildsetid),
  KEY buildrequests_buildername (buildername(255)),
  KEY buildrequests_complete (complete),
  KEY buildrequests_claimed_at (claimed_at),
  KEY buildrequests_claimed_by_name (claimed_by_name(255))
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS builds (
  id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
  number INTEGER NOT NULL,               -- per-builder build number
  brid INTEGER NOT NULL,                 -- one row per request the build satisfied (merges)
  start_time INTEGER NOT NULL,
  finish_time INTEGER,
  KEY builds_number (number),
  KEY builds_brid (brid)
) ENGINE=InnoDB;

-- Additions by bbb, not part of the 0.8 model: indexes for the adapter's
-- look-up by external_idstring and its polling by completion and finish
-- time.  The adapter works without them (more slowly), so on a master's
-- production database they are optional.
CREATE INDEX IF NOT EXISTS bbb_buildsets_external_idstring ON buildsets (external_idstring(255));
CREATE INDEX IF NOT EXISTS bbb_buildrequests_complete_at ON buildrequests (complete_at);
CREATE INDEX IF NOT EXISTS bbb_builds_finish_time ON builds (finish_time);
