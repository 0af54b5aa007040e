"""Package discovery for the one import root: ``doctor/`` plus the top-level ``checks/`` and
``fixers/`` folders installed as ``doctor.checks`` and ``doctor.fixers`` (pyproject.toml holds
everything else). Every package under each root is found, so a new family folder needs no entry."""

from setuptools import find_packages, setup

ROOTS = {"doctor": "doctor", "doctor.checks": "checks", "doctor.fixers": "fixers"}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder) if f"{name}.{sub}" not in ROOTS]

setup(packages=packages, package_dir=ROOTS)
