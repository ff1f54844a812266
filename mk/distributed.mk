# The distributed set-up on this machine, in one command (see docs/distributed.md):
# PostgreSQL and RabbitMQ from the machine (started if down), then scripts/run_distributed.py
# supervises a loopback moto S3 server (unless IMAGEBLUR_S3_ENDPOINT_URL is set),
# `imageblur migrate`, one `imageblur api` on IMAGEBLUR_PORT (default 8080) and two
# `imageblur worker`s: a worker that dies is restarted, a crash loop or the death of the
# API or S3 server stops everything. Ctrl-C or SIGTERM stops all.
#
# Any IMAGEBLUR_* variable in the environment wins over the defaults below.

.PHONY: run-distributed

DIST_MOTO_PORT ?= 9000
DIST_WORKERS ?= 2
# Worker n (from 0) serves its Prometheus metrics on DIST_METRICS_PORT + n.
DIST_METRICS_PORT ?= 9101

# bash, for /dev/tcp probes (for this target only).
run-distributed: SHELL := /bin/bash

run-distributed: install  ## PostgreSQL + RabbitMQ + S3 (moto), migrate, one api and two supervised workers
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
	export IMAGEBLUR_REPOSITORY=postgres IMAGEBLUR_QUEUE=rabbitmq IMAGEBLUR_STORE=s3; \
	export IMAGEBLUR_PORT="$${IMAGEBLUR_PORT:-8080}"; \
	exec $(BIN)/python scripts/run_distributed.py --workers $(DIST_WORKERS) --s3-port $(DIST_MOTO_PORT) \
	    --metrics-port $(DIST_METRICS_PORT)
