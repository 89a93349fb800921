# Two commands do everything on a fresh machine (Python 3.11 + pip):
#   make lab    set up, then start JupyterLab on lessons/
#   make test   set up, then run the whole test suite (CI runs exactly this)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch/torchvision pair the course is tested with (they must match).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: lab test student setup clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[lab,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(BIN)/.installed

# (containers often run as root, where JupyterLab needs --allow-root)
lab: setup
	$(BIN)/jupyter lab lessons/ $(if $(filter 0,$(shell id -u)),--allow-root)

# nbval runs every lesson in the smoke profile unless DIFFEDU_PROFILE says otherwise.
test: setup
	DIFFEDU_PROFILE=$${DIFFEDU_PROFILE:-smoke} $(BIN)/python -m pytest --nbval-lax -p no:cacheprovider

# The student edition, for a teacher to hand out: the lessons with the exercises' solutions replaced by stubs.
student: setup
	$(BIN)/python -m diffedu student --lessons lessons --out student

clean:
	rm -rf $(VENV)
