"""Stand-in for the Rust `tokenizers` package: importable, but unusable.  The harness feeds token
ids directly, so no tokenizer is ever run.  Every attribute (and every `tokenizers.<sub>` module)
is a placeholder class that raises if instantiated.  No dist-info is shipped on purpose, so
transformers' is_tokenizers_available() stays False and its version check is skipped."""
import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0-standin"


def _placeholder(modname, name):
    def __init__(self, *a, **k):
        raise NotImplementedError(f"tokenizers stand-in: {modname}.{name} is not available")

    return type(name, (), {"__init__": __init__, "__module__": modname})


def _install(mod):
    def __getattr__(name, _m=mod):
        if name.startswith("__"):
            raise AttributeError(name)
        v = _placeholder(_m.__name__, name)
        setattr(_m, name, v)
        return v

    mod.__getattr__ = __getattr__


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__path__ = []
        _install(m)
        return m

    def exec_module(self, module):
        parent, _, child = module.__name__.rpartition(".")
        setattr(sys.modules[parent], child, module)


sys.meta_path.insert(0, _Finder())
_install(sys.modules[__name__])
for _sub in ("decoders", "normalizers", "pre_tokenizers", "processors", "models", "trainers", "implementations"):
    __import__(__name__ + "." + _sub)
