# The distributed set-up on this machine, in one command (see docs/distributed.md):
# PostgreSQL and RabbitMQ from the machine (started if down), a loopback moto S3 server
# unless IMAGEBLUR_S3_ENDPOINT_URL is set, `imageblur migrate`, one `imageblur api` on
# IMAGEBLUR_PORT (default 8080) and two `imageblur worker`s. Ctrl-C or SIGTERM stops all.
#
# Any IMAGEBLUR_* variable in the environment wins over the defaults below.

.PHONY: run-distributed

DIST_MOTO_PORT ?= 9000
DIST_WORKERS ?= 2
# Worker n (from 0) serves its Prometheus metrics on DIST_METRICS_PORT + n.
DIST_METRICS_PORT ?= 9101

# bash, for /dev/tcp probes, `wait -n` and traps (for this target only).
run-distributed: SHELL := /bin/bash

run-distributed: install  ## PostgreSQL + RabbitMQ + S3 (moto), migrate, one api and two workers
	@set -eu; \
	port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$$1") 2>/dev/null; }; \
	wait_port() { for _ in $$(seq 1 120); do port_open "$$1" && return 0; sleep 0.5; done; \
	    echo "run-distributed: nothing listens on port $$1" >&2; return 1; }; \
	if ! port_open 5432; then \
	    echo "starting PostgreSQL"; \
	    pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql | tail -1)" main start; \
	    wait_port 5432; \
	fi; \
	if [ -z "$${IMAGEBLUR_POSTGRES_DSN:-}" ]; then \
	    psql -h 127.0.0.1 -U postgres -d postgres -Atc \
	        "SELECT 1 FROM pg_database WHERE datname = 'imageblur'" | grep -q 1 \
	    || createdb -h 127.0.0.1 -U postgres imageblur; \
	fi; \
	if ! port_open 5672; then \
	    echo "starting RabbitMQ"; rabbitmq-server -detached; wait_port 5672; \
	fi; \
	pids=""; \
	stop() { trap - INT TERM EXIT; echo "run-distributed: stopping"; \
	    for p in $$pids; do kill -TERM "$$p" 2>/dev/null || true; done; \
	    for p in $$pids; do wait "$$p" 2>/dev/null || true; done; }; \
	trap stop INT TERM EXIT; \
	if [ -z "$${IMAGEBLUR_S3_ENDPOINT_URL:-}" ]; then \
	    $(BIN)/python -m moto.server -H 127.0.0.1 -p $(DIST_MOTO_PORT) >/dev/null 2>&1 & \
	    pids="$$pids $$!"; wait_port $(DIST_MOTO_PORT); \
	    echo "S3 (moto, in memory) on http://127.0.0.1:$(DIST_MOTO_PORT)"; \
	    export IMAGEBLUR_S3_ENDPOINT_URL="http://127.0.0.1:$(DIST_MOTO_PORT)"; \
	    export IMAGEBLUR_S3_ACCESS_KEY_ID="$${IMAGEBLUR_S3_ACCESS_KEY_ID:-testing}"; \
	    export IMAGEBLUR_S3_SECRET_ACCESS_KEY="$${IMAGEBLUR_S3_SECRET_ACCESS_KEY:-testing}"; \
	    export IMAGEBLUR_S3_ADDRESSING_STYLE="$${IMAGEBLUR_S3_ADDRESSING_STYLE:-path}"; \
	    export IMAGEBLUR_S3_CREATE_BUCKETS="$${IMAGEBLUR_S3_CREATE_BUCKETS:-true}"; \
	fi; \
	export IMAGEBLUR_REPOSITORY=postgres IMAGEBLUR_QUEUE=rabbitmq IMAGEBLUR_STORE=s3; \
	export IMAGEBLUR_PORT="$${IMAGEBLUR_PORT:-8080}"; \
	$(BIN)/imageblur migrate; \
	$(BIN)/imageblur api & pids="$$pids $$!"; \
	for n in $$(seq 0 $$(( $(DIST_WORKERS) - 1 ))); do \
	    IMAGEBLUR_METRICS_PORT=$$(( $(DIST_METRICS_PORT) + n )) $(BIN)/imageblur worker & \
	    pids="$$pids $$!"; \
	done; \
	echo "imageblur API on http://127.0.0.1:$$IMAGEBLUR_PORT with $(DIST_WORKERS) workers; Ctrl-C stops"; \
	wait -n $$pids || true
