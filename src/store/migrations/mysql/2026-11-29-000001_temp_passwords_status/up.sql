-- One name for every state column: `status` (accounts, login_challenges and payments had it).
ALTER TABLE temp_passwords RENAME COLUMN state TO status;
