//! Integration tests: the real binary against a real PostgreSQL cluster, real git
//! repositories and a real Docker engine with Compose. One test binary (as ripgrep does).

mod support;

mod architecture;
mod backup_compose;
mod backup_direct;
mod backup_failures;
mod check;
mod cli;
mod colours;
mod crash;
mod db_primitives;
mod deploy;
mod doctor;
mod down;
mod faithful;
mod health;
mod images;
mod init_layouts;
mod interrupts;
mod kept_databases;
mod manual_restore;
mod notify;
mod output;
mod proxy;
mod remote;
mod restore;
mod rollback_rules;
mod runtime;
mod schedule;
mod serve;
mod server_layouts;
mod shared_remote;
mod snapshot_rules;
mod stable;
mod troubleshooting;
mod zero_downtime;
