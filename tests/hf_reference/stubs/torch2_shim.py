"""Torch 2.x names that transformers 4.51 touches but torch 1.13 lacks.  None of them is on the
math path of an eager, single-process, CPU forward: they are distributed-tensor types (only
used in isinstance checks / tensor parallel), default-device queries, and compiler flags.
Call install() before importing transformers 4.51."""
import sys
import types

import torch


def _mod(name):
    m = sys.modules.get(name)
    if m is None:
        m = types.ModuleType(name)
        m.__path__ = []
        sys.modules[name] = m
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, m)
    return m


def install():
    added = []
    try:
        import importlib
        importlib.import_module("torch.distributed.tensor")
    except ImportError:
        dt = _mod("torch.distributed.tensor")

        class DTensor(torch.Tensor):  # never instantiated: isinstance(x, DTensor) is always False
            pass

        class Placement:
            pass

        class Replicate(Placement):
            pass

        class Shard(Placement):
            def __init__(self, dim=0):
                self.dim = dim

        dt.DTensor, dt.Placement, dt.Replicate, dt.Shard = DTensor, Placement, Replicate, Shard
        _mod("torch.distributed.tensor.parallel")
        added.append("torch.distributed.tensor")
    if not hasattr(torch, "get_default_device"):
        torch.get_default_device = lambda: torch.device("cpu")
        added.append("torch.get_default_device")
    if not hasattr(torch, "compiler"):
        torch.compiler = types.SimpleNamespace()
    if not hasattr(torch.compiler, "is_compiling"):
        torch.compiler.is_compiling = lambda: False
        torch.compiler.is_exporting = lambda: False
        added.append("torch.compiler.is_compiling/is_exporting")
    if not hasattr(torch.compiler, "disable"):
        # used only as a decorator on flex-attention helpers; identity here
        def disable(fn=None, recursive=True):
            return fn if fn is not None else (lambda f: f)

        torch.compiler.disable = disable
        added.append("torch.compiler.disable")
    import inspect

    Module = torch.nn.Module
    if "remove_duplicate" not in inspect.signature(Module.named_parameters).parameters:
        # torch 2.0 semantics (used by find_tied_parameters): with remove_duplicate=False every
        # name of a shared (tied) parameter is listed; with True (the 1.13 behaviour) each once.
        _orig_np, _orig_nb = Module.named_parameters, Module.named_buffers

        def _all_members(self, get, prefix, recurse):
            mods = self.named_modules(prefix=prefix, remove_duplicate=False) if recurse else [(prefix, self)]
            for mprefix, mod in mods:
                for k, v in get(mod):
                    if v is None:
                        continue
                    yield (mprefix + ("." if mprefix else "") + k), v

        def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
            if remove_duplicate:
                return _orig_np(self, prefix=prefix, recurse=recurse)
            return _all_members(self, lambda m: m._parameters.items(), prefix, recurse)

        def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
            if remove_duplicate:
                return _orig_nb(self, prefix=prefix, recurse=recurse)
            return _all_members(self, lambda m: m._buffers.items(), prefix, recurse)

        Module.named_parameters, Module.named_buffers = named_parameters, named_buffers
        added.append("nn.Module.named_parameters/named_buffers(remove_duplicate=)")
    if "assign" not in inspect.signature(Module.load_state_dict).parameters:
        # torch 2.1 `assign=True`: put the given tensors into the module as they are (transformers
        # 4.51 builds the model on the meta device and fills it one tensor at a time this way)
        # instead of copy_()-ing into the existing (meta) storage.  Values are not touched.
        _orig_lsd = Module.load_state_dict

        def load_state_dict(self, state_dict, strict=True, assign=False):
            if not assign:
                return _orig_lsd(self, state_dict, strict=strict)
            unexpected = []
            for key, t in state_dict.items():
                mod_path, _, leaf = key.rpartition(".")
                try:
                    mod = self.get_submodule(mod_path) if mod_path else self
                except AttributeError:
                    unexpected.append(key)
                    continue
                if leaf in mod._parameters and mod._parameters[leaf] is not None:
                    old = mod._parameters[leaf]
                    if tuple(old.shape) != tuple(t.shape):
                        raise RuntimeError(f"size mismatch for {key}: {tuple(t.shape)} vs {tuple(old.shape)}")
                    mod._parameters[leaf] = torch.nn.Parameter(t.detach(), requires_grad=old.requires_grad)
                elif leaf in mod._buffers:
                    old = mod._buffers[leaf]
                    if old is not None and tuple(old.shape) != tuple(t.shape):
                        raise RuntimeError(f"size mismatch for {key}: {tuple(t.shape)} vs {tuple(old.shape)}")
                    mod._buffers[leaf] = t.detach()
                else:
                    unexpected.append(key)
            if strict and unexpected:
                raise RuntimeError(f"unexpected keys {unexpected}")
            from torch.nn.modules.module import _IncompatibleKeys
            return _IncompatibleKeys([], unexpected)

        Module.load_state_dict = load_state_dict
        added.append("nn.Module.load_state_dict(assign=)")
    for name in ("float8_e4m3fn", "float8_e5m2"):
        if not hasattr(torch, name):
            # only a key of modeling_utils.str_to_torch_dtype and the target of `dtype == torch.float8_*`
            # checks; a sentinel that equals no real dtype keeps those checks False
            setattr(torch, name, _Sentinel(name))
            added.append("torch." + name)
    return added


class _Sentinel:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<absent torch.{self.name}>"
