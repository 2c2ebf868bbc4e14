"""Paths every test shares: the repository root (tests live in folders that mirror gist_core/), and the scripts
under bench/ loaded as modules (they are scripts, not a package)."""
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_bench(name: str) -> ModuleType:
    """bench/<name>.py as the module `name` (registered in sys.modules: a dataclass there looks its module up)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
