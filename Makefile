# maglica.cloud: `make demo` sets up a one-host cloud and clones a VM; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
BUILD := $(CURDIR)/build
# ansible-playbook and pytest find the collection through this link.
COLLECTIONS := $(BUILD)/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/maglica/cloud
# ansible-test needs a real directory ending in ansible_collections/maglica/cloud.
SANITY_COPY := $(BUILD)/sanity/ansible_collections/maglica/cloud
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PYTHONPATH := $(COLLECTIONS):$(CURDIR)/plugins/module_utils
export ANSIBLE_PYTHON_INTERPRETER := $(PY)
export ANSIBLE_LOCALHOST_WARNING := false
export ANSIBLE_INVENTORY_UNPARSED_WARNING := false

.PHONY: all deps collection-link images images-hypervisor test sanity units integration rollout lint typecheck imports demo demo-clean testbed-stop \
        bench-list bench-clone bench-batch bench-dispatch bench-faults bench-fuzz bench-module-overhead bench-boot bench-placement bench-image bench-migrate bench-drain clean

all: test

deps:
	VENV=$(VENV) bash scripts/install-deps.sh

collection-link:
	mkdir -p $(dir $(COLLECTION_LINK))
	ln -sfn $(CURDIR) $(COLLECTION_LINK)

test: deps collection-link sanity lint typecheck imports units integration rollout

# Two pytest workers (pytest-xdist), each with its own PostgreSQL server for the job log's tests: CI's minutes.
units: deps collection-link
	$(PY) -m pytest -q -p no:cacheprovider -n 2 tests/unit

# The testbed (libvirtds, their guest networks, workers, booted guests) and the tests live in one network
# namespace of their own: no guest address ever appears in the machine's own network namespace.
IN_TESTBED_NETNS := bash tests/testbed/testbed.sh locked bash tests/testbed/testbed.sh netns

# Two pytest workers, each with a testbed of its own (tests/integration/conftest.py gives each its addresses,
# ports and state directory); a test file stays on one worker, so a module's booted guest serves all its tests.
# Most of a test's time is spent waiting on guests and daemons, so two workers share the two cores well.
INTEGRATION_WORKERS ?= 2
integration: deps collection-link images
	$(IN_TESTBED_NETNS) $(PY) -m pytest -q -p no:cacheprovider -n $(INTEGRATION_WORKERS) --dist loadfile --durations=25 \
	  --ignore=tests/integration/test_rollout.py tests/integration

# The roll-out test: site.yml over SSH onto two booted Debian 12 hypervisor guests (tests/integration/test_rollout.py).
# A phase of its own after the integration suite, so that its guests (software emulation) have the cores to themselves;
# about 15 minutes.
rollout: deps collection-link images-hypervisor
	$(IN_TESTBED_NETNS) $(PY) -m pytest -q -p no:cacheprovider -rA tests/integration/test_rollout.py

# The tests' guest images, cached in MAGLICA_IMAGE_CACHE (tests/testbed/env.sh): the small bootless ones
# (build_image.sh, one appliance each; first, so that a run that builds beside the tests has them when the first
# test asks), then the bootable ones, built from Debian's packages in the machine's own network namespace: the
# testbed's has no route to the mirror.
images: deps
	bash tests/testbed/build_image.sh --cache debian rhel debian-nm debian-cloudinit
	bash tests/testbed/build_bootable.sh --cache ifupdown nm cloudinit

# The roll-out test's hypervisor guests (make rollout), built like `make images` outside the testbed's namespace.
images-hypervisor: deps
	bash tests/testbed/build_bootable.sh --cache ifupdown hypervisor

sanity: deps
	rm -rf $(SANITY_COPY) && mkdir -p $(SANITY_COPY)
	git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -C $(SANITY_COPY) -xf -
	cd $(SANITY_COPY) && git init -q && git add -A && \
	  $(VENV)/bin/ansible-test sanity --requirements --venv --python 3.11 --color no $(SANITY_ARGS)

# The library's type hints (it also runs as the worker daemons, without Ansible); then the modules, the inventory
# plugin and module_utils/common.py, which import it by the collection's names (build/collections).
typecheck: deps collection-link
	cd plugins/module_utils && $(VENV)/bin/mypy --config-file $(CURDIR)/mypy.ini maglica
	cd $(COLLECTIONS) && MYPYPATH=$(COLLECTIONS) $(VENV)/bin/mypy --config-file $(CURDIR)/mypy.ini \
	  --namespace-packages --explicit-package-bases -p ansible_collections.maglica.cloud.plugins.modules \
	  -p ansible_collections.maglica.cloud.plugins.inventory -m ansible_collections.maglica.cloud.plugins.module_utils.common

# The import contracts (.importlinter): the library's layers by where code runs, modules through the facade.
imports: deps collection-link
	$(VENV)/bin/lint-imports --no-cache

lint: deps collection-link
	$(VENV)/bin/ansible-lint --profile production --offline roles playbooks

demo: deps collection-link
	bash scripts/demo.sh

demo-clean:
	bash scripts/demo.sh clean

testbed-stop:
	bash tests/testbed/testbed.sh stop

# Benchmarks have a testbed of their own (state directory and network namespace), so one started while
# `make test` runs leaves the tests' hypervisors alone. BENCH_ARGS=--quick: the short mode CI runs.
BENCHMARKS := list clone batch dispatch faults fuzz module-overhead boot placement image migrate
BENCH_TESTBED_DIR ?= /var/tmp/maglica-bench
BENCH_NETNS ?= maglica-bench
BENCH_ARGS ?=
bench-boot bench-image bench-migrate: images
$(addprefix bench-,$(BENCHMARKS)): deps collection-link
	MAGLICA_TESTBED_DIR=$(BENCH_TESTBED_DIR) MAGLICA_NETNS=$(BENCH_NETNS) \
	  $(IN_TESTBED_NETNS) $(PY) benchmarks/$(subst -,_,$(subst bench-,,$@)).py $(BENCH_ARGS)
# The drain of a host against its migrations one after another (issue 19): bench-migrate's other phase.
bench-drain: images deps collection-link
	MAGLICA_TESTBED_DIR=$(BENCH_TESTBED_DIR) MAGLICA_NETNS=$(BENCH_NETNS) \
	  $(IN_TESTBED_NETNS) $(PY) benchmarks/drain_phase.py $(BENCH_ARGS)

clean:
	rm -rf $(BUILD)
