"""Offline stand-in for `huggingface_hub`, just enough for `import transformers` and
from_pretrained(<local directory>).  Nothing here touches the model math.

* Real values for the names whose values matter at import time (constants, REGEX_COMMIT_HASH,
  _CACHED_NO_EXIST, the decorator `_deprecate_method`, ...).
* Any other attribute of this package or of any `huggingface_hub.*` submodule is made up on first
  use: CamelCase -> a new Exception subclass (works for `except X:` and as a base class),
  ALL_CAPS -> an empty string, lowercase -> a function raising NotImplementedError (so any
  network/hub call fails loudly instead of silently doing something).
* Any `huggingface_hub.<sub>` module is created on import by a meta-path finder.
"""
import importlib.abc
import importlib.machinery
import os
import re
import sys
import types

__version__ = "0.30.2"


def _make(modname, name):
    if name.startswith("__"):
        raise AttributeError(name)
    if name.isupper() or (name.upper() == name and "_" in name):
        return ""
    if name[:1].isupper():
        return type(name, (Exception,), {"__module__": modname})

    def _missing(*a, **k):
        raise NotImplementedError(f"huggingface_hub stand-in: {modname}.{name} is not available offline")

    _missing.__name__ = name
    return _missing


def _install_getattr(mod):
    def __getattr__(name, _m=mod):
        val = _make(_m.__name__, name)
        setattr(_m, name, val)
        return val

    mod.__getattr__ = __getattr__


# ---- constants ----------------------------------------------------------------------------------
constants = types.ModuleType(__name__ + ".constants")
constants.__file__ = __file__
_home = os.path.expanduser(os.getenv("HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "huggingface")))
constants.HF_HOME = _home
constants.default_home = _home
constants.default_cache_path = os.path.join(_home, "hub")
constants.HF_HUB_CACHE = os.getenv("HF_HUB_CACHE", constants.default_cache_path)
constants.HUGGINGFACE_HUB_CACHE = constants.HF_HUB_CACHE
constants.HF_ASSETS_CACHE = os.path.join(_home, "assets")
constants.HF_HUB_OFFLINE = True
constants.HF_HUB_DISABLE_TELEMETRY = True
constants.HF_HUB_DISABLE_PROGRESS_BARS = True
constants.HF_HUB_ENABLE_HF_TRANSFER = False
constants.HF_TOKEN_PATH = os.path.join(_home, "token")
constants.ENDPOINT = "https://offline.invalid"
constants.HUGGINGFACE_CO_URL_TEMPLATE = "https://offline.invalid/{repo_id}/resolve/{revision}/{filename}"
constants.HUGGINGFACE_CO_RESOLVE_ENDPOINT = "https://offline.invalid"
constants.REPO_TYPES = [None, "model", "dataset", "space"]
constants.REPO_TYPES_URL_PREFIXES = {"dataset": "datasets/", "space": "spaces/"}
constants.SAFETENSORS_SINGLE_FILE = "model.safetensors"
constants.SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
constants.DEFAULT_REVISION = "main"
constants.DEFAULT_ETAG_TIMEOUT = 10
constants.DEFAULT_DOWNLOAD_TIMEOUT = 10
constants.DEFAULT_REQUEST_TIMEOUT = 10
_install_getattr(constants)
sys.modules[constants.__name__] = constants

REGEX_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
_CACHED_NO_EXIST = object()


def _deprecate_method(*, version=None, message=""):
    def deco(f):
        return f

    return deco


def _deprecate_arguments(*a, **k):
    def deco(f):
        return f

    return deco


def _deprecate_positional_args(*a, **k):
    if a and callable(a[0]):
        return a[0]

    def deco(f):
        return f

    return deco


def validate_hf_hub_args(f):
    return f


def is_offline_mode():
    return True


def try_to_load_from_cache(*a, **k):
    return None


def get_token(*a, **k):
    return None


def build_hf_headers(*a, **k):
    return {}


def send_telemetry(*a, **k):
    return None


def disable_progress_bars():
    pass


def enable_progress_bars():
    pass


def are_progress_bars_disabled():
    return True


class _Hashlib:
    import hashlib as _h
    md5 = staticmethod(_h.md5)
    sha1 = staticmethod(_h.sha1)
    sha256 = staticmethod(_h.sha256)


insecure_hashlib = _Hashlib()

_install_getattr(sys.modules[__name__])

# Names that every submodule shares with the top level (transformers imports the same helpers from
# huggingface_hub, huggingface_hub.utils, huggingface_hub.utils._deprecation, huggingface_hub.file_download, ...)
_SHARED = {k: v for k, v in dict(globals()).items()
           if k in ("REGEX_COMMIT_HASH", "_CACHED_NO_EXIST", "_deprecate_method", "_deprecate_arguments",
                    "_deprecate_positional_args", "validate_hf_hub_args", "is_offline_mode",
                    "try_to_load_from_cache", "get_token", "build_hf_headers", "send_telemetry",
                    "disable_progress_bars", "enable_progress_bars", "are_progress_bars_disabled",
                    "insecure_hashlib", "constants")}


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + ".") and fullname != constants.__name__:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__path__ = []
        m.__dict__.update(_SHARED)
        _install_getattr(m)
        return m

    def exec_module(self, module):
        parent, _, child = module.__name__.rpartition(".")
        setattr(sys.modules[parent], child, module)


sys.meta_path.insert(0, _Finder())
# make `huggingface_hub.utils` etc. reachable as attributes after a plain `import huggingface_hub`
import huggingface_hub.utils  # noqa: E402
import huggingface_hub.file_download  # noqa: E402,F401
import huggingface_hub.errors  # noqa: E402,F401
