# fleet-install: `make demo` and `make test` set everything up themselves on a fresh machine
# with the Rust toolchain, Python 3.11 and Node 20.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# checkov has a virtualenv of its own: its boto3 pin clashes with aws-sam-cli's (requirements-checkov.txt).
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: help setup test lint unit contract e2e demo bench sam-build clean

help:
	@echo "make demo   - the whole system on the local stack: a simulated fleet, live progress, a report"
	@echo "make test   - every test: static checks, unit, contract and end-to-end"
	@echo "make bench  - API calls, state transitions, time and memory figures"
	@echo "make sam-build - build the deployable artifacts (sam build --no-cached)"

$(VENV_STAMP): local-stack/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r local-stack/requirements.txt
	touch $@

$(CHECKOV_STAMP): requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

setup: $(VENV_STAMP) $(NODE_STAMP)

# checkov: any failed check fails lint; a justified exception is a Metadata checkov skip on its resource.
lint: setup $(CHECKOV_STAMP)
	cargo fmt --all -- --check
	cargo clippy --all-targets --quiet -- -D warnings
	cfn-lint template.yaml
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --quiet --compact --skip-download
	npx --no-install asl-validator $(addprefix --json-path ,$(wildcard statemachine/*.asl.json))
	sam validate --lint --template-file template.yaml

unit:
	cargo test --workspace --quiet

contract: setup
	$(VPY) -m pytest tests -q -m "not e2e"

# The local stack: moto (extended) on 127.0.0.1, the Rust functions under cargo lambda watch.
# The 100,000-target rollout runs in a session (and a stack) of its own and prints its figures.
e2e: setup
	$(VPY) -m pytest tests/e2e local-stack/tests -q -m "not scale"
	$(VPY) -m pytest tests/e2e -q -rA -s -m scale

test: lint unit contract e2e

demo: setup
	$(VPY) local-stack/scenarios/demo.py

# Figures against targets on stdout and in target/bench/report.json (about 19 minutes on 2 cores with the release build done; 31 from a fresh clone).
bench: setup
	$(VPY) local-stack/scenarios/bench.py

sam-build: setup
	rustup target add aarch64-unknown-linux-gnu
	sam build --no-cached

clean:
	rm -rf target .aws-sam
