#!/bin/sh
# (Re)creates the accelerate stand-in that peft 0.13.2 (and 0.15.2 / 0.17.1) imports, under ${STUBS2:-/tmp/peftcheck/stubs2}.
# See README.md "Stand-ins". None of these names is on the math path.
set -e
D=${STUBS2:-/tmp/peftcheck/stubs2}
mkdir -p "$D/accelerate/utils"
cat > "$D/accelerate/__init__.py" <<'PYEOF'
"""Offline stand-in for `accelerate`, just enough for `import peft` (v0.13.2). Nothing here is on
the math path of PeftModel.from_pretrained + forward on a CPU model that is not dispatched/offloaded:
* init_empty_weights: only used by PEFT with low_cpu_mem_usage=True (not used here) -> raises.
* dispatch_model / infer_auto_device_map: only for device_map / offloaded models -> raise.
* hooks.AlignDevicesHook: a class only used in isinstance() checks (no model here has hooks).
* utils.is_*_available: False (CPU only).
No dist-info ships on purpose, so transformers' is_accelerate_available() stays False and
transformers takes its plain (non-accelerate) loading path, as in ../hf_reference/compare.py.
"""
__version__ = "0.0.0+standin"


def _missing(name):
    def f(*a, **k):
        raise NotImplementedError(f"accelerate stand-in: {name} is not available offline")
    f.__name__ = name
    return f


init_empty_weights = _missing("init_empty_weights")
dispatch_model = _missing("dispatch_model")
infer_auto_device_map = _missing("infer_auto_device_map")


class FullyShardedDataParallelPlugin:  # only referenced by PEFT's FSDP helpers
    def __init__(self, *a, **k):
        raise NotImplementedError("accelerate stand-in: FSDP")


from . import hooks, utils  # noqa: E402,F401
from .utils import memory  # noqa: E402,F401  (peft >= 0.15)
PYEOF
cat > "$D/accelerate/hooks.py" <<'PYEOF'
"""accelerate.hooks stand-in: hooks are never attached in this check."""


class ModelHook:
    pass


class AlignDevicesHook(ModelHook):  # isinstance() target only
    def __init__(self, *a, **k):
        raise NotImplementedError("accelerate stand-in: AlignDevicesHook")


def add_hook_to_module(module, hook, append=False):
    raise NotImplementedError("accelerate stand-in: add_hook_to_module")


def remove_hook_from_module(module, recurse=False):
    # real accelerate: removes `_hf_hook` if present; a module without hooks is returned unchanged
    if hasattr(module, "_hf_hook"):
        raise NotImplementedError("accelerate stand-in: module has an accelerate hook")
    if recurse:
        for child in module.children():
            remove_hook_from_module(child, recurse)
    return module


def remove_hook_from_submodules(module):
    for child in module.children():
        remove_hook_from_module(child, recurse=True)
PYEOF
cat > "$D/accelerate/utils/__init__.py" <<'PYEOF'
"""accelerate.utils stand-in (CPU only, no offloading)."""
from .imports import is_mlu_available, is_npu_available, is_xpu_available  # noqa: F401


def _missing(name):
    def f(*a, **k):
        raise NotImplementedError(f"accelerate stand-in: accelerate.utils.{name} is not available offline")
    f.__name__ = name
    return f


named_module_tensors = _missing("named_module_tensors")
offload_state_dict = _missing("offload_state_dict")
get_balanced_memory = _missing("get_balanced_memory")
patch_environment = _missing("patch_environment")
PYEOF
cat > "$D/accelerate/utils/imports.py" <<'PYEOF'
def is_xpu_available(*a, **k):
    return False


def is_npu_available(*a, **k):
    return False


def is_mlu_available(*a, **k):
    return False


def is_bf16_available(*a, **k):  # peft >= 0.15: LoRA-FA optimizer / RandLoRA only
    return False
PYEOF
cat > "$D/accelerate/utils/memory.py" <<'PYEOF'
"""accelerate.utils.memory stand-in (peft >= 0.15 imports it for LoftQ only)."""
import gc


def clear_device_cache(garbage_collection=False):
    # real accelerate: gc.collect() if asked, then empties the accelerator cache (none here: CPU)
    if garbage_collection:
        gc.collect()
PYEOF
echo "stand-ins written to $D"
