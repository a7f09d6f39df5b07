# segflow worker image: one image for Dataflow workers (--sdk_container_image), for the Dataflow Flex Template
# launcher (templates/preprocess/) and for Vertex AI training (trainer.launch --image_uri).
#
# Based on the official Beam SDK image of exactly the Beam and Python versions segflow pins, so the worker
# harness (/opt/apache/beam/boot, the entrypoint Dataflow starts) matches the SDK that built the job.
#   docker build -t IMAGE .                                  # Dataflow workers, CPU training
#   docker build --build-arg TF_EXTRAS=and-cuda -t IMAGE .   # + CUDA libraries for Vertex AI GPU training
# See docs/cloud.md (make docker-image).

# The Flex Template launcher binary, copied into the final image (Google's documented pattern).
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest AS template_launcher

FROM apache/beam_python3.11_sdk:2.77.0

ARG TF_EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1

WORKDIR /segflow
# Dependencies first (from setup.py only), so a code change does not reinstall the stack.
COPY setup.py /segflow/setup.py
RUN python - <<'PY' > /tmp/requirements.txt
import ast, pathlib
tree = ast.parse(pathlib.Path("setup.py").read_text())
for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "REQUIRED":
        print("\n".join(ast.literal_eval(node.value)))
PY
RUN pip install -r /tmp/requirements.txt \
 && if [ -n "$TF_EXTRAS" ]; then pip install "tensorflow[${TF_EXTRAS}]>=2.21.0,<2.22"; fi \
 && python -c "import apache_beam, tensorflow, tensorflow_transform; print(apache_beam.__version__, tensorflow.__version__)"

COPY schemas /segflow/schemas
COPY pipelines /segflow/pipelines
COPY trainer /segflow/trainer
# A regular (non-editable) install: workers import segflow from site-packages, never from a checkout.
RUN pip install --no-deps /segflow && python -c "import pipelines.preprocess, pipelines.infer, trainer.launch"

# Flex Template launcher: runs pipelines/preprocess/__main__.py with the template's parameters as flags.
COPY --from=template_launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/segflow/pipelines/preprocess/__main__.py

# Keep the Beam SDK harness as the entrypoint (Dataflow starts it with its own arguments). Vertex AI overrides the
# command with `python -m trainer.task ...` (see trainer/launch.py).
ENTRYPOINT ["/opt/apache/beam/boot"]
