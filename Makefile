# Two commands for a fresh machine (see README): `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

## Set up and run the live mirror on http://127.0.0.1:8000 (offline default model).
run: $(STAMP)
	$(VENV)/bin/smart-closet serve

## Set up and run every test.
test: $(STAMP)
	$(VENV)/bin/python -m pytest

## One client streaming the fixture video at 40 FPS, 1280x720 (figures in bench/results/).
bench: $(STAMP)
	$(VENV)/bin/smart-closet bench --video ../shared/fixtures/video/pose_squats.mp4 \
		--clients 1 --fps 40 --size 1280x720 --seconds 20 --json bench/results/cpu-1client.json

clean:
	rm -rf $(VENV) build *.egg-info

lint: $(STAMP)
	$(VENV)/bin/pip install --quiet ruff==0.17.6 && $(VENV)/bin/ruff check src tests bench && $(VENV)/bin/ruff format --check src tests bench
