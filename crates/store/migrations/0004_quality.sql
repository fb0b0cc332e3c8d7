-- The pipeline's quality score (0-100) of the copy that was kept; NULL when it gave none.
ALTER TABLE segments ADD COLUMN quality INTEGER;
