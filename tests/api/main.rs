//! Black-box tests: the real application on a random port, each test with a fresh
//! PostgreSQL database (from `DATABASE_URL`, default the local server), driven over HTTP.

mod admin;
mod bad_input;
mod budgets;
mod cluster;
mod console;
mod cors;
mod helpers;
mod idempotency;
mod identity;
mod isolation;
mod monitoring;
mod openapi;
mod operator;
mod ordering;
mod rate_limits;
mod security_identity;
mod security_limits;
mod security_ops;
mod security_restore;
mod security_streams;
mod shutdown;
mod spam_cluster;
mod stream;
mod supervisor;
mod ticket_rules;
mod widget_post;
mod widget_read;
mod widget_v1;
