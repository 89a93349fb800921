# Two commands do everything on a fresh machine (Python 3.11 + pip):
#   make lab    set up, then start JupyterLab on lessons/
#   make test   set up, then run the whole test suite (CI runs exactly this)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch/torchvision pair the course is tested with (they must match).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: lab test lint browser-test colab-test student course setup clean

$(BIN)/.installed: pyproject.toml lab/overrides.json Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[lab,test,lint]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp lab/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	# nbgrader is for grading from the command line; its JupyterLab panels would only confuse learners
	$(BIN)/jupyter labextension disable --level=sys_prefix @jupyter/nbgrader >/dev/null 2>&1
	touch $@

setup: $(BIN)/.installed

# (containers often run as root, where JupyterLab needs --allow-root)
lab: setup
	$(BIN)/jupyter lab lessons/ $(if $(filter 0,$(shell id -u)),--allow-root)

# nbval runs every lesson in the smoke profile unless DIFFEDU_PROFILE says otherwise.
test: setup
	DIFFEDU_PROFILE=$${DIFFEDU_PROFILE:-smoke} $(BIN)/python -m pytest --nbval-lax -p no:cacheprovider

# What CI and the pre-commit hooks hold the code to (configured in pyproject.toml): lint, format, spelling, types.
SPELLED := diffedu lessons/*.py tests benchmarks browser tools README.md docs
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/codespell $(SPELLED)
	$(BIN)/mypy

# The lessons in a real browser: JupyterLab as `make lab` runs it, driven by Playwright in headless Chromium
# (Debian's package: Playwright's own browser download is not used). Screenshots go to browser-screenshots/.
browser-test: setup
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$${CHROMIUM:-}" ] || \
	  { echo "installing Debian's chromium for the browser test"; apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "error: the browser test needs Chromium: run 'apt-get install chromium' (as root), or set CHROMIUM=/path/to/chromium"; exit 1; }
	DIFFEDU_PROFILE=smoke $(BIN)/python -m pytest browser -p no:cacheprovider -v

# The course installed as Colab installs it, without this Makefile's set-up: a fresh environment that already has
# PyTorch (the wheel on disk) and, as Colab has its own, the oldest versions of the light dependencies that
# pyproject.toml declares (tests/test_colab.py holds the two lists together); then lesson 01 under nbval, Colab
# faked (google.colab imported at the kernel's start), so that its set-up cell takes the install branch and
# pip-installs this checkout, as it would the repository.
OLDEST := numpy==2.0.2 matplotlib==3.8.4 ipywidgets==8.1.0 tqdm==4.66.0 safetensors==0.4.3
COLAB  := $(CURDIR)/.colab-test
colab-test:
	rm -rf $(COLAB) && $(PYTHON) -m venv $(COLAB)/venv && mkdir -p $(COLAB)/ipython/profile_default/startup
	$(COLAB)/venv/bin/python -m pip install -q $(TORCH) $(OLDEST) pytest nbval ipykernel
	echo 'import sys, types; sys.modules["google.colab"] = types.ModuleType("google.colab")' \
	  > $(COLAB)/ipython/profile_default/startup/00-colab.py
	cd $(COLAB) && IPYTHONDIR=$(COLAB)/ipython DIFFEDU_INSTALL=$(CURDIR) venv/bin/python -m pytest --nbval-lax \
	  --nbval-current-env -p no:cacheprovider --rootdir=$(COLAB) $(CURDIR)/lessons/01_forward_process.ipynb
	$(COLAB)/venv/bin/python -m pip show diffedu | grep -q "^Location: $(COLAB)/venv/" \
	  || { echo "error: the set-up cell did not install the course"; exit 1; }

# The student edition, for a teacher to hand out: the lessons with the exercises' solutions replaced by stubs.
student: setup
	$(BIN)/python -m diffedu student --lessons lessons --out student

# A course folder for a teacher who grades with nbgrader: its configuration, each lesson with exercises an
# assignment, released (the solutions stubbed). Grade from course/: ../.venv/bin/nbgrader autograde <lesson>.
course: setup
	$(BIN)/python -m diffedu course --lessons lessons --out course

clean:
	rm -rf $(VENV)
