-- Times are Unix milliseconds (BIGINT) so both backends store them alike.
-- Money is integer minor units (1250 = 12.50) with an ISO 4217 currency.
CREATE TABLE accounts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  username VARCHAR(64) NOT NULL,
  password_hash VARCHAR(255) NOT NULL,
  display_name VARCHAR(255) NOT NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'active',
  failed_logins INTEGER NOT NULL DEFAULT 0,
  locked_until BIGINT NULL,
  balance BIGINT NOT NULL DEFAULT 0,
  currency VARCHAR(3) NOT NULL DEFAULT 'CNY',
  password_changed_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  CONSTRAINT accounts_username_unique UNIQUE (username)
);

CREATE TABLE phones (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id BIGINT NOT NULL,
  e164 VARCHAR(20) NOT NULL,
  created_at BIGINT NOT NULL,
  CONSTRAINT phones_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE,
  CONSTRAINT phones_account_number_unique UNIQUE (account_id, e164)
);
CREATE INDEX phones_e164 ON phones (e164);

-- ID scans and photos live in the database so one backup holds everything.
CREATE TABLE identity_documents (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id BIGINT NOT NULL,
  kind VARCHAR(16) NOT NULL,
  media_type VARCHAR(32) NOT NULL,
  size_bytes BIGINT NOT NULL,
  sha256 CHAR(64) NOT NULL,
  content BLOB NOT NULL,
  created_at BIGINT NOT NULL,
  CONSTRAINT documents_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE,
  CONSTRAINT documents_account_kind_unique UNIQUE (account_id, kind)
);

CREATE TABLE login_challenges (
  id VARCHAR(36) NOT NULL PRIMARY KEY,
  account_id BIGINT NOT NULL,
  caller_e164 VARCHAR(20) NOT NULL,
  dial_number VARCHAR(20) NOT NULL,
  secret_hash CHAR(64) NOT NULL,
  code_hash CHAR(64) NULL,
  status VARCHAR(16) NOT NULL,
  failure_reason VARCHAR(32) NULL,
  node_url VARCHAR(255) NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  client_ip VARCHAR(45) NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  verified_at BIGINT NULL,
  consumed_at BIGINT NULL,
  CONSTRAINT challenges_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE
);
CREATE INDEX challenges_match ON login_challenges (caller_e164, dial_number, status);

CREATE TABLE sessions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  token_hash CHAR(64) NOT NULL,
  account_id BIGINT NOT NULL,
  challenge_id VARCHAR(36) NULL,
  client_ip VARCHAR(45) NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  revoked_at BIGINT NULL,
  CONSTRAINT sessions_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE,
  CONSTRAINT sessions_token_unique UNIQUE (token_hash)
);

CREATE TABLE temp_passwords (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id BIGINT NOT NULL,
  label VARCHAR(64) NULL,
  secret_hash CHAR(64) NOT NULL,
  state VARCHAR(16) NOT NULL DEFAULT 'active',
  valid_from BIGINT NULL,
  valid_until BIGINT NULL,
  max_uses INTEGER NULL,
  uses INTEGER NOT NULL DEFAULT 0,
  spend_limit BIGINT NULL,
  spent BIGINT NOT NULL DEFAULT 0,
  per_payment_limit BIGINT NULL,
  created_at BIGINT NOT NULL,
  revoked_at BIGINT NULL,
  CONSTRAINT temp_passwords_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE,
  CONSTRAINT temp_passwords_secret_unique UNIQUE (secret_hash)
);

CREATE TABLE payments (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id BIGINT NOT NULL,
  temp_password_id BIGINT NULL,
  amount BIGINT NOT NULL,
  currency VARCHAR(3) NOT NULL,
  status VARCHAR(16) NOT NULL,
  reason VARCHAR(32) NULL,
  idempotency_key VARCHAR(128) NULL,
  fingerprint CHAR(64) NULL,
  response TEXT NULL,
  created_at BIGINT NOT NULL,
  CONSTRAINT payments_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE,
  CONSTRAINT payments_idempotency_unique UNIQUE (account_id, idempotency_key)
);

-- Every balance change; the balance always equals the sum of amounts.
CREATE TABLE ledger_entries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id BIGINT NOT NULL,
  kind VARCHAR(16) NOT NULL,
  amount BIGINT NOT NULL,
  balance_after BIGINT NOT NULL,
  payment_id BIGINT NULL,
  note VARCHAR(255) NULL,
  created_at BIGINT NOT NULL,
  CONSTRAINT ledger_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE
);
CREATE INDEX ledger_account ON ledger_entries (account_id);

-- No foreign key: the audit trail outlives deleted accounts.
CREATE TABLE audit_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at BIGINT NOT NULL,
  kind VARCHAR(48) NOT NULL,
  outcome VARCHAR(32) NOT NULL,
  reason VARCHAR(64) NULL,
  account_id BIGINT NULL,
  username VARCHAR(64) NULL,
  client_ip VARCHAR(45) NULL,
  detail TEXT NULL
);
CREATE INDEX audit_at ON audit_events (at);
CREATE INDEX audit_account ON audit_events (account_id);
