# yambda_dl: `make demo` and `make test` are all a newcomer needs; each sets the environment up first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DATA   ?= data
# SANSA joins the demo where its optional extra is installed (make setup-sansa)
DEMO_MODELS ?= random,mostpop,decaypop,itemknn,audio_knn,ials,bpr$(shell $(PY) -c "import sansa" >/dev/null 2>&1 && echo ",sansa")
# SASRec on CPU: sampled softmax over 1,024 shared negatives and 40 epochs instead of the paper's BCE and 100 epochs
DEMO_SASREC ?= model.epochs=40 model/loss=sampled_softmax model.loss.num_negatives=1024
# torch: a CPU build where no NVIDIA GPU is present; the default (CUDA) build where one is.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")
EXTRAS ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "dev,gpu" || echo "dev")

.PHONY: help setup setup-sansa demo readme-results zoo zoo-results beyond beyond-results audio audio-results \
	test test-fast lint format bench clean
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed  ## make .venv and install yambda_dl with its dev extra (CPU torch without CUDA)

$(VENV)/.sansa: $(VENV)/.installed
	@dpkg -s libsuitesparse-dev >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq libsuitesparse-dev >/dev/null; } || \
		{ echo "SANSA needs SuiteSparse: sudo apt-get install libsuitesparse-dev, then make setup-sansa"; exit 1; }
	$(PIP) install -q -e ".[$(EXTRAS),sansa]"
	touch $@

setup-sansa: $(VENV)/.sansa  ## also install the optional SANSA baseline (SuiteSparse via apt, scikit-sparse, sansa)

# every `make demo` writes a fresh folder (UTC time + random hex): a rerun, or a rerun after a kill, never mixes runs
DEMO_ID  := $(shell date -u +%Y%m%d-%H%M%S)-$(shell od -An -N4 -tx4 /dev/urandom | tr -d ' ')
DEMO_OUT ?= outputs/demo/$(DEMO_ID)

demo: setup  ## generate the small synthetic dataset, run every model, print the results table (~8 min on 2 cores)
	$(VENV)/bin/yambda-data synth --preset small --root $(DATA)/synthetic_small
	$(VENV)/bin/yambda-train -m data=synthetic_small paths.data_dir=$(DATA) model=$(DEMO_MODELS) \
		hydra.sweep.dir=$(DEMO_OUT) logger=none
	$(VENV)/bin/yambda-train data=synthetic_small paths.data_dir=$(DATA) model=sasrec $(DEMO_SASREC) \
		hydra.run.dir=$(DEMO_OUT)/sasrec logger=none
	$(VENV)/bin/yambda-report $(DEMO_OUT)
	ln -sfn $(DEMO_ID) outputs/demo/latest
	@echo "outputs in $(DEMO_OUT) (outputs/demo/latest); make readme-results puts its table into README.md"

readme-results: setup  ## write the latest demo's results table into README.md (from its runs, never by hand)
	$(PY) scripts/readme_results.py outputs/demo/latest

# the sequential zoo on synthetic_small, Listen+, final, over seeds, beside MostPop and sampled-softmax SASRec
ZOO_MODELS ?= sasrec,esasrec,bert4rec,gru4rec,hstu
ZOO_SEEDS  ?= 0,1,2
ZOO_EPOCHS ?= 30
# GRU4Rec once more at its YAML's 100 epochs: at ZOO_EPOCHS (120 steps on small) it has not converged
ZOO_GRU_EPOCHS ?= 100
ZOO_OUT    ?= outputs/zoo/$(DEMO_ID)
ZOO_DATA    = data=synthetic_small paths.data_dir=$(DATA) logger=none seed=$(ZOO_SEEDS)
ZOO_ARGS    = $(ZOO_DATA) model.epochs=$(ZOO_EPOCHS)

zoo: setup  ## every sequential model over 3 seeds on synthetic_small, with MostPop and sampled-softmax SASRec
	$(VENV)/bin/yambda-data synth --preset small --root $(DATA)/synthetic_small
	$(VENV)/bin/yambda-train -m data=synthetic_small paths.data_dir=$(DATA) logger=none model=mostpop \
		hydra.sweep.dir=$(ZOO_OUT)/mostpop
	$(VENV)/bin/yambda-train -m $(ZOO_ARGS) model=$(ZOO_MODELS) hydra.sweep.dir=$(ZOO_OUT)/zoo
	$(VENV)/bin/yambda-train -m $(ZOO_ARGS) model=sasrec model/loss=sampled_softmax \
		hydra.sweep.dir=$(ZOO_OUT)/sasrec_sampled_softmax
	$(VENV)/bin/yambda-train -m $(ZOO_DATA) model=gru4rec model.epochs=$(ZOO_GRU_EPOCHS) \
		hydra.sweep.dir=$(ZOO_OUT)/gru4rec_$(ZOO_GRU_EPOCHS)_epochs
	$(VENV)/bin/yambda-report $(ZOO_OUT)
	ln -sfn $(DEMO_ID) outputs/zoo/latest

zoo-results: setup  ## write the latest zoo's table (mean +- std over seeds) into README.md
	$(PY) scripts/readme_results.py outputs/zoo/latest --block zoo-results --made-by "make zoo zoo-results"

# evaluation beyond the paper: every demo model with hourly streaming states (and the target slices every run has)
BEYOND_OUT ?= outputs/beyond/$(DEMO_ID)
beyond: setup  ## the demo's models with hourly streaming user states: frozen vs streaming, organic vs recommended
	$(VENV)/bin/yambda-data synth --preset small --root $(DATA)/synthetic_small
	$(VENV)/bin/yambda-train -m data=synthetic_small paths.data_dir=$(DATA) model=$(DEMO_MODELS) logger=none \
		eval.stream.window=3600 hydra.sweep.dir=$(BEYOND_OUT)
	$(VENV)/bin/yambda-train data=synthetic_small paths.data_dir=$(DATA) model=sasrec $(DEMO_SASREC) logger=none \
		eval.stream.window=3600 hydra.run.dir=$(BEYOND_OUT)/sasrec
	ln -sfn $(DEMO_ID) outputs/beyond/latest

beyond-results: setup  ## write the latest `make beyond` tables into README.md
	$(PY) scripts/readme_results.py outputs/beyond/latest --block stream-results --made-by "make beyond beyond-results" \
		-- --compare stream_frozen,stream --metrics paper_ndcg@10,paper_recall@100
	$(PY) scripts/readme_results.py outputs/beyond/latest --block organic-results --made-by "make beyond beyond-results" \
		-- --compare all,organic,recommended --metrics paper_ndcg@10,paper_recall@100

# the audio models over 3 seeds with the cold candidates ranked: SASRec with each item representation (the paper's
# BCE recipe, AUDIO_EPOCHS epochs), iALS and BPR with and without the audio start, audio_knn and Random
AUDIO_EPOCHS ?= 20
AUDIO_OUT    ?= outputs/audio/$(DEMO_ID)
AUDIO_ARGS    = data=synthetic_small paths.data_dir=$(DATA) logger=none seed=$(ZOO_SEEDS) protocol.candidates=train_and_cold
audio: setup  ## SASRec with every audio item representation, iALS/BPR audio starts, audio_knn, over 3 seeds
	$(VENV)/bin/yambda-data synth --preset small --root $(DATA)/synthetic_small
	$(VENV)/bin/yambda-train -m $(AUDIO_ARGS) model=random,audio_knn hydra.sweep.dir=$(AUDIO_OUT)/content
	$(VENV)/bin/yambda-train -m $(AUDIO_ARGS) model=ials,bpr model.init=random,audio hydra.sweep.dir=$(AUDIO_OUT)/factors
	$(VENV)/bin/yambda-train -m $(AUDIO_ARGS) model=sasrec model.epochs=$(AUDIO_EPOCHS) \
		model/item_repr=id,hybrid,content,audio_init,delta,semantic_ids hydra.sweep.dir=$(AUDIO_OUT)/sasrec
	ln -sfn $(DEMO_ID) outputs/audio/latest

audio-results: setup  ## write the latest `make audio` table into README.md
	$(PY) scripts/readme_results.py outputs/audio/latest --block audio-results --made-by "make audio audio-results" \
		-- --compare all,warm,cold --metrics paper_ndcg@10,paper_ndcg@100,recall@100

test: setup  ## run the test suite (about 7 minutes on 2 cores; make test-fast skips the slow ones)
	WANDB_MODE=offline $(PY) -m pytest -q

test-fast: setup  ## the suite without the tests marked slow
	WANDB_MODE=offline $(PY) -m pytest -q -m "not slow"

lint: setup  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup  ## ruff fix and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

BENCH_ROOT ?= /tmp/bench50m
bench: setup  ## every benchmark at its default size, on synthetic 50m under BENCH_ROOT (hours); record in BENCHMARKS.md
	$(VENV)/bin/yambda-data synth --preset 50m --root $(BENCH_ROOT)
	$(PY) benchmarks/bench_synth.py --preset 50m
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_retrieval.py
	$(PY) benchmarks/bench_convert.py
	$(PY) benchmarks/bench_split.py --root $(BENCH_ROOT) --size 50m
	$(PY) benchmarks/bench_ials_bpr.py --root $(BENCH_ROOT) --size 50m --iterations 3
	$(PY) benchmarks/bench_sequential.py --root $(BENCH_ROOT) --size 50m
	$(PY) benchmarks/bench_itemknn_sansa.py --root $(BENCH_ROOT) --size 50m
	$(PY) benchmarks/bench_stream.py --root $(BENCH_ROOT) --size 50m

clean:  ## remove caches and outputs (keeps .venv and data/)
	rm -rf .pytest_cache .ruff_cache outputs multirun lightning_logs wandb
