"""The packages: every `uniner*` package, and the top-level conf/ shipped in the wheel as
`uniner.conf` (so that a regular install has its configs). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["uniner", "uniner.*"]) + ["uniner.conf"],
      package_dir={"uniner.conf": "conf"})
