-- The sink rewrites the statistics row of each user in every batch. With room left on the page
-- the new version stays there (a HOT update): no new primary-key entry per update, and the old
-- version is pruned in place instead of waiting for vacuum.
ALTER TABLE etl.user_stats SET (fillfactor = 50);
