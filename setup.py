"""Package layout that pyproject.toml cannot express: the repository keeps ``conf/`` at its top level
(beside the package, where Hydra users expect it), and every built distribution ships it inside the
package as ``spectral_diffusion/conf`` (``spectral_diffusion.cli.CONFIG_DIR`` finds either). The Taguchi
sweeper ships in the ``hydra_plugins`` namespace package, where Hydra's plugin scan looks for it.
Everything else about the distribution is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

# conf/ and each of its config-group folders, as data-only packages under spectral_diffusion.conf.
CONF_PACKAGES = ["spectral_diffusion.conf"] + [
    f"spectral_diffusion.conf.{group}" for group in find_namespace_packages(where="conf", exclude=["*__pycache__"])
]

setup(
    packages=find_namespace_packages(include=["spectral_diffusion", "spectral_diffusion.*", "hydra_plugins.*"],
                                     exclude=["*__pycache__"]) + CONF_PACKAGES,
    package_dir={"spectral_diffusion.conf": "conf"},
    package_data={package: ["*.yaml"] for package in CONF_PACKAGES},
)
