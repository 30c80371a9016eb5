.PHONY: demo test bench bench-restore bench-rollback bench-deploy bench-remote bench-proxy bench-zero-downtime build dist install

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

## The traffic switch's cost: wrk direct, through nginx, through stablehand proxy.
bench-proxy:
	bash bench/proxy.sh

## Failed requests under a steady load during blue/green, failed-gate, switch-back and
## maintenance-window deploys, beside a stop/start deploy in the same run.
bench-zero-downtime:
	bash bench/zero-downtime.sh

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

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The commit `stablehand --version` names: git's, else a COMMIT file (a source tarball).
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || cat COMMIT 2>/dev/null || echo unknown)
HOST_TARGET := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
PREFIX ?= /usr/local
DIST_NAME := stablehand-$(VERSION)-$(HOST_TARGET)

## The release binary, with the commit it is built from (`stablehand --version`).
build:
	STABLEHAND_COMMIT=$(COMMIT) cargo build --release --locked

## dist/stablehand-VERSION-TARGET.tar.gz (+ .sha256): the binary, its checksum, LICENSE,
## README and docs, and BUILD naming the glibc version the binary needs (objdump -T).
dist: build
	rm -rf dist/$(DIST_NAME) && mkdir -p dist/$(DIST_NAME)/bin
	cp target/release/stablehand dist/$(DIST_NAME)/bin/
	cp LICENSE README.md dist/$(DIST_NAME)/
	cp -r docs dist/$(DIST_NAME)/docs
	cp -r examples/github-actions dist/$(DIST_NAME)/docs/github-actions
	cd dist/$(DIST_NAME) && sha256sum bin/stablehand > SHA256SUMS
	glibc=$$(objdump -T target/release/stablehand | grep -o 'GLIBC_[0-9.]*' | sort -u -V | tail -n 1); \
	  libs=$$(objdump -p target/release/stablehand | awk '/NEEDED/ {print $$2}' | tr '\n' ' '); \
	  printf 'stablehand %s (commit %s) for %s\nneeds %s or newer; links only %s\n' \
	    '$(VERSION)' '$(COMMIT)' '$(HOST_TARGET)' "$$glibc" "$$libs" > dist/$(DIST_NAME)/BUILD
	cat dist/$(DIST_NAME)/BUILD
	tar -C dist -czf dist/$(DIST_NAME).tar.gz $(DIST_NAME)
	cd dist && sha256sum $(DIST_NAME).tar.gz > $(DIST_NAME).tar.gz.sha256
	@echo "dist/$(DIST_NAME).tar.gz"

## Installs the binary into $(PREFIX)/bin (default /usr/local) and the docs into
## $(PREFIX)/share/doc/stablehand; DESTDIR is honoured.
install: build
	install -D -m 0755 target/release/stablehand $(DESTDIR)$(PREFIX)/bin/stablehand
	install -d $(DESTDIR)$(PREFIX)/share/doc/stablehand
	cp -r README.md LICENSE docs $(DESTDIR)$(PREFIX)/share/doc/stablehand/
	$(DESTDIR)$(PREFIX)/bin/stablehand --version
