"""RetailReco: a batch Spark pipeline that precomputes product recommendations."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def _requirements(name: str):
    return [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()
            if line.split("#")[0].strip() and not line.startswith("-r")]


setup(
    name="retailreco",
    version="0.1.0",
    description="Batch recommendation pipeline for retailers: Spark, Delta, PyTorch, MLflow, Airflow, Redis",
    python_requires=">=3.11",
    packages=find_packages(include=["core", "core.*", "config", "config.*", "features", "features.*",
                                    "training", "training.*", "serving", "serving.*", "jobs", "jobs.*", "orchestration",
                                    "orchestration.*"]),
    include_package_data=True,
    install_requires=_requirements("requirements.txt"),
    extras_require={"dev": _requirements("requirements-dev.txt")},
    entry_points={"console_scripts": ["reco=orchestration.cli:main"]},
)
