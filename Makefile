.PHONY: demo test bench bench-restore bench-rollback bench-deploy bench-remote build

## Runs the main job end to end: the demo app deployed, a broken release rolled back
## (code and database), status and history. Installs what it needs.
demo:
	bash scripts/demo.sh

## Everything CI runs: installs dependencies, starts a Docker engine if none answers,
## then fmt --check, clippy -D warnings and all tests (nextest, per-test timeout).
test:
	bash scripts/test.sh

## Side-by-side backup benchmark against pg_dump and the proposal's pg_dump | gzip -9.
bench:
	bash bench/backup.sh

## Restore and snapshot benchmark against gunzip | psql, pg_restore and cp -r.
bench-restore:
	bash bench/restore.sh

## Rollback of the app containers against the proposal's down; sleep; build; up; sleep.
bench-rollback:
	bash bench/rollback.sh

## From a failed health gate to a healthy stable release, against the proposal's
## rollback and restore scripts on the same stack.
bench-deploy:
	bash bench/deploy.sh

## Backup with an upload to a local S3 endpoint against the same backup without one.
bench-remote:
	bash bench/remote.sh

build:
	cargo build --release
