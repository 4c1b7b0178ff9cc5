//! Black-box tests: the real application on a random port, each test with a fresh
//! PostgreSQL database (from `DATABASE_URL`, default the local server), driven over HTTP.

mod helpers;
mod ordering;
mod widget_v1;
