# segflow — the README's two commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segflow-installed
DEMO_DIR ?= out/demo
PYTEST_ARGS ?=

LINTED := pipelines trainer schemas tests bench setup.py

.PHONY: install demo test test-fast test-count lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.tools.demo --work_dir $(DEMO_DIR)

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: everything but the end-to-end tests marked `slow` (pytest.ini). CI runs `make test`.
test-fast: lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# How many tests the suite has (collected, not run); their times come at the end of every `make test`.
test-count: $(STAMP)
	@$(PY) -m pytest --collect-only -q -p no:cacheprovider $(PYTEST_ARGS) | tail -n 1

# ruff's settings live in .ci/ so that the top level keeps only the product's names.
lint: $(STAMP)
	$(PY) -m ruff check --config .ci/ruff.toml $(LINTED)
	$(PY) -m ruff format --config .ci/ruff.toml --check $(LINTED)

bench: $(STAMP)
	$(PY) bench/preprocess.py
	$(PY) bench/input_pipeline.py
	$(PY) bench/train_quality.py
	$(PY) bench/infer.py

clean:
	rm -rf out build *.egg-info .pytest_cache

# ------------------------------------------------------------------------------------------------ Google Cloud
# The full mission on Dataflow and Vertex AI; see docs/cloud.md. Credentials: Application Default Credentials
# only (gcloud auth application-default login, or the VM's service account); nothing secret goes in a flag.
#   make dataflow-preprocess PROJECT=my-proj BUCKET=my-bucket DATASET=cityscapes
PROJECT ?=
REGION ?= us-central1
BUCKET ?=
DATASET ?= cityscapes
IMAGE_SIZE ?= $(if $(filter pet,$(DATASET)),128,512$(comma)1024)
MODEL ?= unet
RUN_ID ?= $(shell date +%Y%m%d-%H%M%S)
comma := ,
GCS := gs://$(BUCKET)
RAW ?= $(GCS)/raw/$(DATASET)
RECORDS ?= $(GCS)/records/$(DATASET)
JOB ?= $(GCS)/jobs/$(DATASET)-$(MODEL)
PRED ?= $(GCS)/predictions/$(DATASET)-$(MODEL)
INFER_GLOB ?= $(if $(filter pet,$(DATASET)),$(RAW)/images/*.jpg,$(RAW)/leftImg8bit/val/*/*.png)
# Worker image (Dockerfile). Empty = the stock Beam image + `pip install` of this package on each worker
# (--setup_file); set it to skip that install at worker start-up (minutes saved per worker).
IMAGE ?=
# Worker shape for image work (docs/cloud.md has the reasoning):
# - n2-highmem-4: 8 GB per vCPU. Dataflow runs one SDK process per vCPU, each with TensorFlow loaded
#   (~0.6 GB) and its harness threads each holding a 2048x1024 frame decoded (6 MB RGB, 25 MB as float32),
#   its label/instance maps, the resized copies, and tf.Transform analysis batches; 4 GB/vCPU (n2-standard)
#   leaves too little headroom and out-of-memory kills restart bundles.
# - 2 harness threads per SDK process: image decode/resize/inference are CPU-bound in C++, so more threads
#   than that per process only add memory (more frames in flight), not throughput.
# - Autoscaling 1..MAX_WORKERS (THROUGHPUT_BASED): Dataflow grows with the backlog; the cap bounds cost
#   (20 x 4 vCPU finishes Cityscapes' 5,000 fine frames in well under an hour).
# - 50 GB boot disks: batch shuffle runs in the Dataflow Shuffle service, so workers only need room for the
#   image; the 250 GB default just costs money.
DF_MACHINE_TYPE ?= n2-highmem-4
DF_HARNESS_THREADS ?= 2
DF_MAX_WORKERS ?= 20
DF_DISK_GB ?= 50
DATAFLOW_FLAGS = --runner DataflowRunner --project $(PROJECT) --region $(REGION) \
	--temp_location $(GCS)/dataflow/temp --staging_location $(GCS)/dataflow/staging \
	$(if $(IMAGE),--sdk_container_image $(IMAGE),--setup_file ./setup.py) \
	--machine_type $(DF_MACHINE_TYPE) --number_of_worker_harness_threads $(DF_HARNESS_THREADS) \
	--autoscaling_algorithm THROUGHPUT_BASED --num_workers 1 --max_num_workers $(DF_MAX_WORKERS) \
	--disk_size_gb $(DF_DISK_GB) $(DF_EXTRA)
# Vertex AI training shape (docs/cloud.md): one T4 by default; REPLICAS>1 = chief + workers (multi-worker).
VERTEX_MACHINE_TYPE ?= n1-standard-8
VERTEX_ACCELERATOR ?= NVIDIA_TESLA_T4
VERTEX_ACCELERATOR_COUNT ?= 1
REPLICAS ?= 1
TRAIN_FLAGS ?= --epochs 40 --batch_size 16 --mixed_precision
VERTEX_DRY_RUN ?=

.PHONY: gcloud-check docker-image flex-template dataflow-preprocess dataflow-preprocess-template \
	vertex-train dataflow-infer dataflow-evaluate cloud-mission

gcloud-check:
	@test -n "$(PROJECT)" || { echo "set PROJECT=<your project id> (see docs/cloud.md)"; exit 2; }
	@test -n "$(BUCKET)" || { echo "set BUCKET=<a gs bucket name in $(REGION)> (see docs/cloud.md)"; exit 2; }

docker-image: gcloud-check  ## build and push IMAGE (e.g. REGION-docker.pkg.dev/PROJECT/segflow/worker:TAG)
	@test -n "$(IMAGE)" || { echo "set IMAGE=$(REGION)-docker.pkg.dev/$(PROJECT)/segflow/worker:0.1.0"; exit 2; }
	gcloud builds submit --project $(PROJECT) --region $(REGION) --tag $(IMAGE) .

flex-template: gcloud-check  ## a console-launchable template of preprocess (needs IMAGE)
	@test -n "$(IMAGE)" || { echo "set IMAGE= to the pushed worker image (make docker-image)"; exit 2; }
	gcloud dataflow flex-template build $(GCS)/templates/preprocess.json --project $(PROJECT) \
		--image $(IMAGE) --sdk-language PYTHON --metadata-file templates/preprocess/metadata.json

dataflow-preprocess: gcloud-check $(STAMP)
	$(PY) -m pipelines.preprocess --dataset $(DATASET) --input_dir $(RAW) --output_dir $(RECORDS) \
		--image_size $(IMAGE_SIZE) $(PREPROCESS_FLAGS) $(DATAFLOW_FLAGS) --job_name segflow-preprocess-$(RUN_ID)

dataflow-preprocess-template: gcloud-check  ## run the flex template (what the console does)
	gcloud dataflow flex-template run segflow-preprocess-$(RUN_ID) --project $(PROJECT) --region $(REGION) \
		--template-file-gcs-location $(GCS)/templates/preprocess.json \
		--parameters dataset=$(DATASET),input_dir=$(RAW),output_dir=$(RECORDS),image_size=$(subst $(comma),x,$(IMAGE_SIZE)) \
		--parameters sdk_container_image=$(IMAGE),number_of_worker_harness_threads=$(DF_HARNESS_THREADS) \
		--worker-machine-type $(DF_MACHINE_TYPE) --num-workers 1 --max-workers $(DF_MAX_WORKERS) \
		--temp-location $(GCS)/dataflow/temp --staging-location $(GCS)/dataflow/staging

vertex-train: gcloud-check $(STAMP)
	@test -n "$(IMAGE)" || { echo "set IMAGE= to the pushed worker image (make docker-image, TF_EXTRAS=and-cuda)"; exit 2; }
	$(PY) -m trainer.launch --project $(PROJECT) --region $(REGION) --image_uri $(IMAGE) \
		--data_dir $(RECORDS) --model $(MODEL) --job_dir $(JOB) --display_name segflow-$(MODEL)-$(RUN_ID) \
		--machine_type $(VERTEX_MACHINE_TYPE) \
		$(if $(VERTEX_ACCELERATOR),--accelerator_type $(VERTEX_ACCELERATOR) --accelerator_count $(VERTEX_ACCELERATOR_COUNT)) \
		--replica_count $(REPLICAS) $(TRAIN_FLAGS) $(VERTEX_DRY_RUN)

dataflow-infer: gcloud-check $(STAMP)
	$(PY) -m pipelines.infer --model_dir $(JOB)/model --input '$(INFER_GLOB)' --output_dir $(PRED) \
		$(INFER_FLAGS) $(DATAFLOW_FLAGS) --job_name segflow-infer-$(RUN_ID)

dataflow-evaluate: gcloud-check $(STAMP)
	$(PY) -m pipelines.evaluate --predictions $(PRED)/masks --ground_truth $(RAW) --dataset $(DATASET) \
		--output_file $(PRED)/evaluation.json $(DATAFLOW_FLAGS) --job_name segflow-evaluate-$(RUN_ID)
