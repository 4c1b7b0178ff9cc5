-- colloquy's schema. Every table is keyed by team_id and every query is scoped by it: a
-- ticket id alone never finds a ticket, and the data distributes by team if it must.

CREATE TABLE teams (
    id                     uuid PRIMARY KEY,
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The public widget token ships in web pages; it is looked up by its SHA-256 so the
    -- lookup takes the same time whatever prefix an attacker guesses.
    public_token           text NOT NULL,
    public_token_sha256    bytea NOT NULL UNIQUE,
    -- Operator keys are shown once and kept only as SHA-256 (they are 256-bit random).
    secret_key_sha256      bytea NOT NULL UNIQUE,
    identity_secret        text NOT NULL,
    identity_verification  text NOT NULL DEFAULT 'off'
                           CHECK (identity_verification IN ('off', 'optional', 'required')),
    conversations_enabled  boolean NOT NULL DEFAULT true,
    allowed_widget_domains text[] NOT NULL DEFAULT '{}',
    rate_limits            jsonb NOT NULL DEFAULT '{}',
    -- Spam-defence thresholds and weights (defaults for keys not given).
    suspicion              jsonb NOT NULL DEFAULT '{}',
    -- Who is mailed about new tickets.
    notification_recipients text[] NOT NULL DEFAULT '{}',
    created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX teams_by_name ON teams (name);

-- Ticket numbers count up per team; a separate row keeps ticket creation from locking the
-- team row that settings changes update.
CREATE TABLE ticket_counters (
    team_id     uuid PRIMARY KEY REFERENCES teams (id) ON DELETE CASCADE,
    last_number bigint NOT NULL DEFAULT 0
);

CREATE TABLE tickets (
    id                   uuid PRIMARY KEY,
    team_id              uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    ticket_number        bigint NOT NULL,
    -- The access key: exactly one of distinct_id (documented surface) and
    -- widget_session_id (posthog-js surface) is set.
    distinct_id          text,
    widget_session_id    uuid,
    -- A person a posthog-js ticket is linked to; never grants access.
    linked_distinct_id   text,
    traits               jsonb NOT NULL DEFAULT '{}',
    status               text NOT NULL DEFAULT 'new'
                         CHECK (status IN ('new', 'open', 'pending', 'on_hold', 'resolved')),
    assignee             text,
    -- Operator messages the visitor has not read / visitor messages the team has not read.
    unread_customer_count integer NOT NULL DEFAULT 0,
    unread_team_count     integer NOT NULL DEFAULT 0,
    -- When the visitor last marked the ticket read (operators see it).
    visitor_read_at       timestamptz,
    -- Public messages only: what widgets count and preview.
    message_count        integer NOT NULL DEFAULT 0,
    last_message         text,
    last_message_at      timestamptz,
    -- Newest message of any kind: the per-ticket ordering anchor.
    last_created_at      timestamptz,
    -- Bumped by every change of the row, so a cached copy can tell which update is newer.
    version              bigint NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL,
    UNIQUE (team_id, ticket_number),
    CHECK ((distinct_id IS NULL) <> (widget_session_id IS NULL))
);
CREATE INDEX tickets_by_visitor ON tickets (team_id, distinct_id, last_message_at DESC)
    WHERE distinct_id IS NOT NULL;
CREATE INDEX tickets_by_session ON tickets (team_id, widget_session_id, last_message_at DESC)
    WHERE widget_session_id IS NOT NULL;
CREATE INDEX tickets_inbox ON tickets (team_id, last_created_at DESC);

CREATE TABLE messages (
    id                uuid PRIMARY KEY,
    team_id           uuid NOT NULL,
    ticket_id         uuid NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    content           text NOT NULL,
    rich_content      jsonb,
    author_type       text NOT NULL CHECK (author_type IN ('customer', 'AI', 'human')),
    author_name       text,
    is_private        boolean NOT NULL DEFAULT false,
    distinct_id       text,
    client_message_id text,
    created_at        timestamptz NOT NULL
);
CREATE INDEX messages_by_ticket ON messages (ticket_id, created_at);
-- Idempotency: a retried POST with the same key finds the first write.
CREATE UNIQUE INDEX messages_idempotency ON messages (team_id, distinct_id, client_message_id)
    WHERE client_message_id IS NOT NULL;

CREATE TABLE suspicion_flags (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    ticket_id   uuid,
    distinct_id text,
    ip          inet,
    reason      text NOT NULL,
    score       smallint NOT NULL CHECK (score BETWEEN 0 AND 100),
    detail      text NOT NULL DEFAULT '',
    observed_at timestamptz NOT NULL
);
CREATE INDEX suspicion_flags_by_team ON suspicion_flags (team_id, observed_at DESC);

-- Restore by email (posthog-js surface): one-time links, stored as SHA-256, valid 60 minutes.
CREATE TABLE restore_tokens (
    id           uuid PRIMARY KEY,
    team_id      uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    token_sha256 bytea NOT NULL UNIQUE,
    email        text NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tickets_by_email ON tickets (team_id, (traits->>'email'))
    WHERE widget_session_id IS NOT NULL;

-- Outbound mail, written in the request's transaction and delivered by the Mailer actor
-- with retries; without SMTP it stays here (and in the log) for a developer to read.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id         uuid REFERENCES teams (id) ON DELETE CASCADE,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL;

-- Blocked IPs and visitors: set by operators, or for a while by the suspicion detector.
-- Every node keeps the unexpired ones in memory, refreshed every 2 seconds.
CREATE TABLE blocks (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    ip          inet,
    distinct_id text,
    reason      text NOT NULL DEFAULT '',
    source      text NOT NULL CHECK (source IN ('operator', 'detector')),
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((ip IS NULL) <> (distinct_id IS NULL))
);
CREATE INDEX blocks_by_team ON blocks (team_id, created_at DESC);
