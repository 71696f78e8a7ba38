# Two commands for a fresh machine (see README): `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

WEB_BUILD := src/smartcloset/webapp/index.html
WEB_SRC := $(shell find web/src web/index.html web/vite.config.ts web/tsconfig.json web/package.json -type f 2>/dev/null)

.PHONY: run test bench lint clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e .
	touch $(STAMP)

# The tests also need PyTorch (the CPU build; RTMPose's tests), pytest, hypothesis and Playwright.
$(TEST_STAMP): $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

# The page is built into the package (src/smartcloset/webapp/), which serves it.
$(WEB_BUILD): web/node_modules/.installed $(WEB_SRC)
	cd web && npm run build

## Set up and run the live mirror on http://127.0.0.1:8000 (offline default model).
run: $(STAMP) $(WEB_BUILD)
	$(VENV)/bin/smart-closet serve

## Set up and run every test: the page's (Vitest), then Python's (pytest, with the browser test).
test: $(TEST_STAMP) $(WEB_BUILD) chromium
	cd web && npm test
	$(VENV)/bin/python -m pytest

# Debian's Chromium drives the end-to-end test (Playwright's own browser download does not
# work everywhere). Installed when running as root; otherwise that one test skips and says why.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed: the browser test will skip (apt-get install chromium)"; fi; }

## One client streaming the fixture video at 40 FPS, 1280x720 (figures in bench/results/).
bench: $(STAMP)
	$(VENV)/bin/smart-closet bench --video ../shared/fixtures/video/pose_squats.mp4 \
		--clients 1 --fps 40 --size 1280x720 --seconds 20 --json bench/results/cpu-1client.json

clean:
	rm -rf $(VENV) build *.egg-info web/node_modules src/smartcloset/webapp

lint: $(TEST_STAMP)
	$(VENV)/bin/pip install --quiet ruff==0.17.6 && $(VENV)/bin/ruff check src tests bench && $(VENV)/bin/ruff format --check src tests bench
