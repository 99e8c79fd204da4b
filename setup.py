"""Maps the top-level `environments/` and `agents/` folders into the `simworld` namespace."""

from setuptools import find_packages, setup

NAMESPACED = {"simworld": "simworld", "simworld.environments": "environments", "simworld.agents": "agents"}

packages = []
for package, folder in NAMESPACED.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=NAMESPACED, package_data={"simworld": ["py.typed"]})
