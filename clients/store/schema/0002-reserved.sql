-- PLACEHOLDER for the outbox branch's version-2 file (issue 9 part 1). The schema files
-- must be numbered 1, 2, 3 without a gap, and this branch adds version 3. Delete this
-- file when the outbox branch's 0002 file is merged (two version-2 files are refused).
SELECT 1
