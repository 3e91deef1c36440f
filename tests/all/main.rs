//! Weir's integration tests, in one binary (one module per topic) so plugins are built once.
//! The example and fault plugins are built for wasm32-wasip2 with `weir plugin build` on first use.

// Test fixtures may unwrap: a panic there is a failed test with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_auth;
mod author;
mod bench;
mod bounds;
mod cassandra_auth;
mod cassandra_semantics;
mod cli;
mod compose;
mod connectors;
mod crash;
mod database_tls;
mod disk_full;
mod failover;
mod faults;
mod fleet;
mod hot_swap;
mod http_journal;
mod judging;
mod kafka_retention;
mod kafka_security;
mod kafka_sink_faults;
mod manifest;
mod metrics;
mod observe;
mod operator;
mod pipelines;
mod poison;
mod polyglot;
mod postgres_faults;
mod postgres_privileges;
mod postgres_tail;
mod quickstart;
mod rebalance;
mod replay;
mod resilience;
mod rollout;
mod runtime;
mod sdk_as_wasm;
mod seed;
mod services;
mod support;
mod swappable;
mod two_writers;
