-- Every cold load reads the newest snapshot whole. pglz-decompressing a ~200 KB state costs
-- more than reading it uncompressed (measured: the automerge-paper state, 223 KB, compressed to
-- 135 KB, took 2-3.5 ms to fetch). Keep snapshot states uncompressed (still out of line).
ALTER TABLE snapshots ALTER COLUMN state SET STORAGE EXTERNAL;
