-- Placeholder on branch h13c only: number 0012 belongs to another helper's migration, merged
-- in parallel (this branch's is 0013). Drop this file when that one lands: migrations are
-- numbered without gaps.
SELECT 1;
