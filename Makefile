# Two commands do everything on a fresh machine (Python 3.11 + pip):
#   make lab    set up, then start JupyterLab on lessons/
#   make test   set up, then run the whole test suite (CI runs exactly this)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch/torchvision pair the course is tested with (they must match).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: lab test browser-test student course setup clean

$(BIN)/.installed: pyproject.toml lab/overrides.json Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[lab,test]"
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

# The lessons in a real browser: JupyterLab as `make lab` runs it, driven by Playwright in headless Chromium
# (Debian's package: Playwright's own browser download is not used). Screenshots go to browser-screenshots/.
browser-test: setup
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$${CHROMIUM:-}" ] || \
	  { echo "installing Debian's chromium for the browser test"; apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "error: the browser test needs Chromium: run 'apt-get install chromium' (as root), or set CHROMIUM=/path/to/chromium"; exit 1; }
	DIFFEDU_PROFILE=smoke $(BIN)/python -m pytest browser -p no:cacheprovider -v

# The student edition, for a teacher to hand out: the lessons with the exercises' solutions replaced by stubs.
student: setup
	$(BIN)/python -m diffedu student --lessons lessons --out student

# A course folder for a teacher who grades with nbgrader: its configuration, each lesson with exercises an
# assignment, released (the solutions stubbed). Grade from course/: ../.venv/bin/nbgrader autograde <lesson>.
course: setup
	$(BIN)/python -m diffedu course --lessons lessons --out course

clean:
	rm -rf $(VENV)
