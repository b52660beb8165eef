ALTER TABLE temp_passwords RENAME COLUMN status TO state;
