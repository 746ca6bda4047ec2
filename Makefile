# reshard: build, test, benchmark, demo. See README.md.
SWIFT ?= swift
BUILD_FLAGS ?=
TEST_FLAGS ?= --disable-swift-testing

.PHONY: build release test unit integration bench demo rehearse-docker embed-migrations check-migrations check-leftovers clean

build:
	$(SWIFT) build $(BUILD_FLAGS)

release:
	$(SWIFT) build -c release $(BUILD_FLAGS)

## Every test: unit tests and integration tests against real local PostgreSQL clusters.
test: check-migrations
	./scripts/check-routing-deps.sh
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build $(TEST_FLAGS)
	./scripts/check-leftovers.sh

unit: check-migrations
	$(SWIFT) test $(TEST_FLAGS) --filter ReshardCoreTests

integration:
	$(SWIFT) test $(TEST_FLAGS) --filter IntegrationTests
	./scripts/check-leftovers.sh

## Benchmarks print ratios against baselines measured in the same run.
bench: release
	./scripts/bench.sh

## The README's main job: a short rehearsal of 2 -> 3 shards (one target shared) on throwaway local clusters:
## plan, apply, verify, cutover, rollback, cutover, cleanup under routed writes, every fault kind once
## (kill -9 of the coordinator, restarts of a source, a target and the metadata cluster, terminated
## sessions, lock holders, one across a cutover attempt), then the report. `reshard demo` is the plain walk-through.
DEMO_FLAGS ?= --rows 2000 --writes-per-second 100 --crashes 6 --seed 5 --catch-up-seconds 10
demo: build
	$(SWIFT) run $(BUILD_FLAGS) reshard rehearse $(DEMO_FLAGS)

## The rehearsal against PostgreSQL containers (docker/compose.yml); the report lands in docker/out/.
DOCKER_COMPOSE ?= docker compose
rehearse-docker:
	mkdir -p docker/out
	$(DOCKER_COMPOSE) -f docker/compose.yml up --build --abort-on-container-exit --exit-code-from coordinator; \
	status=$$?; $(DOCKER_COMPOSE) -f docker/compose.yml down -v; exit $$status

## migrations/*.sql are compiled into the binary; regenerate after editing them.
embed-migrations:
	./scripts/embed-migrations.sh

check-migrations:
	@cp Sources/ReshardCore/Metadata/EmbeddedMigrations.swift /tmp/reshard-embedded-check.swift
	@./scripts/embed-migrations.sh
	@if ! cmp -s Sources/ReshardCore/Metadata/EmbeddedMigrations.swift /tmp/reshard-embedded-check.swift; then \
		echo "migrations/ changed: Sources/ReshardCore/Metadata/EmbeddedMigrations.swift was regenerated, commit it"; \
		rm -f /tmp/reshard-embedded-check.swift; exit 1; fi
	@rm -f /tmp/reshard-embedded-check.swift

clean:
	rm -rf .build
