-- Issue 12 (items 9 and 10): restore links do not outlive their token in the outbox, and a
-- person's email can be found (case-insensitively) when they are erased.

-- The token a restore mail carries: once the token is used or expired the mail's body is
-- redacted, and deleting the token (erasure, clean-up of old tokens) deletes the mail.
ALTER TABLE outbox ADD COLUMN restore_token_id uuid REFERENCES restore_tokens (id) ON DELETE CASCADE;
-- When the body was replaced by a note: after delivery, or when its link died unsent.
ALTER TABLE outbox ADD COLUMN redacted_at timestamptz;
CREATE INDEX outbox_live_links ON outbox (restore_token_id)
    WHERE redacted_at IS NULL AND restore_token_id IS NOT NULL;
CREATE INDEX outbox_by_recipient ON outbox (team_id, lower(recipient));
CREATE INDEX restore_tokens_by_email ON restore_tokens (team_id, lower(email));
CREATE INDEX restore_tokens_by_expiry ON restore_tokens (expires_at);
