"""Run a Python script or module with only the packages the lent GPU machine has, so that
`bash bench/gpu_check.sh --cpu` finds here an import that would fail there.

    python bench/device_imports.py bench/sweep_modes.py --runs 2      # a script and its arguments
    python bench/device_imports.py -m pytest tests/engine/test_fused.py

An import of a top-level package that is neither in the standard library, nor on that machine
(/work/.library/device/KINDS.md, "Python packages already there"), nor carried as a wheel
(bench/fetch_wheels.sh), nor this project's, raises ModuleNotFoundError naming it.
"""

import importlib.abc
import runpy
import sys

# The machine's packages by import name (KINDS.md lists distributions; these are the ones the
# engine, the tests and the benchmarks can reach, with their own imports).
DEVICE = {
    "torch", "torchvision", "torchgen", "functorch", "triton", "numpy", "matplotlib", "mpl_toolkits", "PIL",
    "contourpy", "cycler", "fontTools", "kiwisolver", "pyparsing", "dateutil", "six", "packaging",
    "pytest", "_pytest", "pluggy", "iniconfig", "pytest_timeout", "py", "pygments", "hypothesis", "sortedcontainers",
    "attr", "attrs", "exceptiongroup", "sympy", "mpmath", "networkx", "filelock", "fsspec", "jinja2", "markupsafe",
    "typing_extensions", "yaml", "psutil", "tqdm", "scipy", "httpx", "httpcore", "h11", "anyio", "idna", "certifi",
    "sniffio", "cuda", "nvidia", "opt_einsum", "setuptools", "pkg_resources", "_distutils_hack", "google",
}
CARRIED = {"pydantic", "pydantic_core", "annotated_types", "typing_inspection", "pydantic_settings", "dotenv", "redis"}
PROJECT = {"shared", "worker", "bench", "tests", "api", "client", "conftest"}
ALLOWED = DEVICE | CARRIED | PROJECT | set(sys.stdlib_module_names) | {"__main__", "__mp_main__"}


class DeviceOnly(importlib.abc.MetaPathFinder):
    """Refuses what is installed here but not there; what is not here either stays not found
    (libraries probe for optional packages with find_spec)."""

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in ALLOWED or top.startswith("_"):
            return None
        others = (finder for finder in sys.meta_path if finder is not self and hasattr(finder, "find_spec"))
        if all(finder.find_spec(name, path, target) is None for finder in others) or _probed():
            return None  # a probe (importlib.util.find_spec) finds it missing, as it is there
        raise ModuleNotFoundError(f"{top} is not on the GPU machine: carry it as a wheel (bench/fetch_wheels.sh) "
                                  "or keep it off this import path", name=top)


def _probed() -> bool:
    """Whether this lookup is a probe for an optional package (importlib.util.find_spec, as
    torch._dynamo makes for pandas), not an import."""
    frame = sys._getframe(2)
    for _ in range(3):
        if frame is None:
            return False
        if frame.f_code.co_name == "find_spec" and frame.f_globals.get("__name__") == "importlib.util":
            return True
        frame = frame.f_back
    return False


def main() -> None:
    sys.meta_path.insert(0, DeviceOnly())
    args = sys.argv[1:]
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
