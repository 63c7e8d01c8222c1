from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec((Path(__file__).parent / "lcft_tf" / "__init__.py").read_text(), version)

setup(
    name="lcft-tf",
    version=version["__version__"],
    description="On-device fine-tuning of CTR models in TFLite with label correction (LCFT)",
    long_description=(Path(__file__).parent / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["lcft_tf", "lcft_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "ai-edge-litert>=1.0",
        "tensorflow-datasets>=4.9",
        "importlib-resources>=6",  # needed by tensorflow-datasets' builders, not pulled in by it
        "numpy>=1.26",
        "absl-py>=1.4",
        "matplotlib>=3.7",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "psutil>=5.9",  # stale-temp cleanup (live writers' pids), peak memory in reports
        "faiss-cpu>=1.7",  # CoDA's cloud-side retrieval
    ],
    extras_require={
        "test": ["pytest>=7", "scikit-learn>=1.3", "nbclient>=0.7", "nbformat>=5", "ipykernel>=6", "ray>=2.9", "hypothesis>=6", "import-linter>=2.1"],
        "ray": ["ray>=2.9"],
    },
    entry_points={"console_scripts": ["lcft-tf=lcft_tf.__main__:cli_main"]},
)
