"""Models: timm names, local checkpoints and Python factories; layers read through hooks.

Weights come from local files only: a safetensors file, a torch file loaded with
``weights_only=True`` (no pickled code runs), or timm's ``pretrained = true`` served from the
local Hugging Face cache. Without either, a model keeps its random initialisation, seeded from
the run seed and the model name so that it is the same on every run.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import LayerSpec, ModelSpec
from .errors import ModelError

__all__ = ["EMBEDDING", "LoadedModel", "build_model", "load_state_dict", "state_sha256"]

#: the layer name of the model's embedding (its output, or timm's pre-logits features)
EMBEDDING = "embedding"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(module: torch.nn.Module) -> str:
    """Digest of a module's state: every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or of a torch file read with ``weights_only=True``."""
    if not path.is_file():
        raise ModelError(f"{where}: weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means the file is unusable
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{where}: cannot read weights {path} ({first}); expected safetensors "
                         "or a torch state dict (loaded with weights_only=True)") from None
    for key in ("state_dict", "model", "module"):  # common checkpoint wrappers
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{where}: {path} is not a state dict of tensors")
    return dict(state)


def _check_fit(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, where: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (first {k}: file "
                         f"{tuple(state[k].shape)}, model {tuple(own[k].shape)})")
        raise ModelError(f"{where}: weights {path} do not fit the model: " + "; ".join(parts)
                         + "; check the architecture and its kwargs")


#: factories a configuration may name without ``allow_code``: the students shipped here
TRUSTED_FACTORIES = ("distillscope_extract.students",)


def _factory(target: str, where: str, allow_code: bool):
    path, _, func = target.rpartition(":")
    if path not in TRUSTED_FACTORIES and not allow_code:
        raise ModelError(f"{where}: factory {target!r} runs code from outside distillscope "
                         f"(trusted: {', '.join(TRUSTED_FACTORIES)}); read it, then pass "
                         "--allow-code (allow_code=True) to run it")
    try:
        if path.endswith(".py"):
            if not Path(path).is_file():
                raise ModelError(f"{where}: factory file {path} not found")
            name = "distillscope_factory_" + hashlib.sha1(path.encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(path)
    except ImportError as err:
        raise ModelError(f"{where}: cannot import {path} ({err})") from None
    if not callable(getattr(module, func, None)):
        raise ModelError(f"{where}: {path} has no function {func!r}")
    return getattr(module, func)


def _timm(spec: ModelSpec, where: str) -> torch.nn.Module:
    import timm

    if not timm.is_model(spec.timm.split(".")[0]):
        close = difflib.get_close_matches(spec.timm.split(".")[0], timm.list_models(), n=3)
        raise ModelError(f"{where}: unknown timm model {spec.timm!r}"
                         + (f"; did you mean {', '.join(close)}?" if close else
                            "; list them with timm.list_models('pattern*')"))
    try:
        return timm.create_model(spec.timm, pretrained=spec.pretrained, **spec.kwargs)
    except TypeError as err:
        raise ModelError(f"{where}: {spec.timm} does not accept kwargs {spec.kwargs} ({err})") from None
    except Exception as err:  # noqa: BLE001 - hub and cache failures come in many types
        if spec.pretrained:
            raise ModelError(
                f"{where}: pretrained weights for {spec.timm} are not in the local Hugging Face "
                f"cache ({type(err).__name__}); fetch them on a machine with internet "
                f"(huggingface-cli download timm/{spec.timm}) and copy the cache, or give "
                "weights = 'file.safetensors'") from None
        raise


@dataclass
class LoadedModel:
    """A built model in eval mode, with what the store records about it."""

    spec: ModelSpec
    module: torch.nn.Module
    architecture: str
    n_params: int
    weights: dict[str, Any] = field(default_factory=dict)
    _hooked: dict[str, torch.nn.Module] = field(default_factory=dict, repr=False)  # by check_layers
    _grids: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)  # nhwc layers

    def attrs(self) -> dict[str, Any]:
        out = {"source": "timm" if self.spec.timm else "factory", "embedding": self.spec.embedding,
               "kwargs": dict(self.spec.kwargs), **self.weights}
        if self.spec.family is not None:
            out["family"] = self.spec.family
        if self.spec.seed is not None:
            out["seed"] = self.spec.seed
        return out

    def available_layers(self) -> list[str]:
        """Layer names a configuration may ask for: the embedding, timm's feature_info
        modules, then the modules two levels deep."""
        names = [EMBEDDING]
        for info in getattr(self.module, "feature_info", None) or []:
            if isinstance(info, dict) and info.get("module"):
                names.append(info["module"])
        names += [n for n, _ in self.module.named_modules() if n and n.count(".") <= 1]
        return list(dict.fromkeys(names))

    def check_layers(self, where: str) -> None:
        modules = dict(self.module.named_modules())
        for layer in self.spec.layers:
            if layer.module != EMBEDDING and layer.module not in modules:
                avail = self.available_layers()
                shown = ", ".join(avail[:40]) + (f", ... ({len(avail)} in all)" if len(avail) > 40 else "")
                raise ModelError(f"{where}: no layer {layer.module!r} in {self.architecture}; "
                                 f"available: {shown}")
        if self.spec.embedding == "pre_logits" and not hasattr(self.module, "forward_head"):
            raise ModelError(f"{where}: embedding = 'pre_logits' needs a timm model "
                             "(forward_features / forward_head); use 'output'")
        self._hooked = {layer.name: modules[layer.module] for layer in self.spec.layers
                        if layer.module != EMBEDDING}

    def fuse_batchnorm(self, where: str) -> int:
        """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in an
        ``nn.Sequential`` into the convolution (``W' = W g / sqrt(v + eps)``, ``b' = (b - m) g /
        sqrt(v + eps) + beta``), the norm becoming an identity that outputs what it did: one
        pass over the activations less, the same features within float rounding. A
        convolution whose own output is a configured layer is left as it is. Returns the
        number of norms folded."""
        hooked = {layer.module for layer in self.spec.layers}
        folded = 0
        with torch.no_grad():
            for prefix, seq in list(self.module.named_modules()):
                if not isinstance(seq, torch.nn.Sequential):
                    continue
                names = list(seq._modules)
                for a, b in zip(names, names[1:]):
                    conv, norm = seq._modules[a], seq._modules[b]
                    if (type(conv) is torch.nn.Conv2d and type(norm) is torch.nn.BatchNorm2d
                            and norm.running_var is not None and conv.padding_mode == "zeros"
                            and (f"{prefix}.{a}" if prefix else a) not in hooked):
                        seq._modules[a], seq._modules[b] = _folded(conv, norm), torch.nn.Identity()
                        folded += 1
        if folded:
            self.check_layers(where)  # hooks on a folded norm now sit on its identity
        return folded

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of every configured layer for one batch (hooks on named modules)."""
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for name, module in self._hooked.items():

            def hook(_mod, _inp, out, name=name):
                captured[name] = out[0] if isinstance(out, (tuple, list)) else out

            handles.append(module.register_forward_hook(hook))
        try:
            if self.spec.embedding == "pre_logits":
                out = self.module.forward_head(self.module.forward_features(x), pre_logits=True)
            else:
                out = self.module(x)
        finally:
            for h in handles:
                h.remove()
        for layer in self.spec.layers:
            if layer.module == EMBEDDING:
                captured[layer.name] = out[0] if isinstance(out, (tuple, list)) else out
            if layer.layout == "nhwc":  # (n, h, w, c) -> (n, h * w, c): tokens, row by row
                grid = captured[layer.name]
                if grid.ndim != 4:
                    raise ModelError(f"{self.spec.name}: layer {layer.name!r} has layout 'nhwc' "
                                     f"but gives {tuple(grid.shape)}, not (n, h, w, c)")
                self._grids[layer.name] = (int(grid.shape[1]), int(grid.shape[2]))
                captured[layer.name] = grid.flatten(1, 2)
        return captured

    def layer_layout(self, layer: LayerSpec, sample_shape: tuple[int, ...], where: str) -> dict[str, Any]:
        """The store's kind (and token grid) of a layer from its per-sample shape."""
        if len(sample_shape) == 1:
            return {"kind": "embedding"}
        if len(sample_shape) == 3:
            return {"kind": "map"}
        if len(sample_shape) == 2 and layer.layout == "nhwc":
            return {"kind": "tokens", "grid": list(self._grids[layer.name]), "num_prefix_tokens": 0}
        if len(sample_shape) == 2:
            grid, prefix = layer.grid, layer.num_prefix_tokens
            patch = getattr(self.module, "patch_embed", None)
            if grid is None and patch is not None and hasattr(self.module, "num_prefix_tokens"):
                grid, prefix = tuple(int(g) for g in patch.grid_size), int(self.module.num_prefix_tokens)
            if grid is None:
                raise ModelError(f"{where}: layer {layer.name!r} gives tokens {sample_shape} but "
                                 "the model has no patch grid; give grid and num_prefix_tokens")
            if prefix + grid[0] * grid[1] != sample_shape[0]:
                raise ModelError(f"{where}: layer {layer.name!r} has {sample_shape[0]} tokens, not "
                                 f"{prefix} prefix + {grid[0]}x{grid[1]}; set grid and num_prefix_tokens")
            return {"kind": "tokens", "grid": list(grid), "num_prefix_tokens": prefix}
        raise ModelError(f"{where}: layer {layer.name!r} output {sample_shape} per sample is "
                         "neither (d,), (c, h, w) nor (tokens, d)")


def build_model(spec: ModelSpec, *, seed: int, where: str, allow_code: bool = False) -> LoadedModel:
    """Build one model on the CPU, in eval mode, with its weights. A factory outside
    ``TRUSTED_FACTORIES`` runs only with ``allow_code`` (a configuration is data, not code)."""
    init_seed = zlib.crc32(f"{seed}:{spec.name}".encode())
    torch.manual_seed(init_seed)
    if spec.timm is not None:
        module = _timm(spec, where)
        architecture = spec.timm
    else:
        module = _factory(spec.factory, where, allow_code)(**spec.kwargs)
        if not isinstance(module, torch.nn.Module):
            raise ModelError(f"{where}: factory {spec.factory} returned {type(module).__name__}, "
                             "not a torch.nn.Module")
        architecture = f"{spec.factory.rpartition(':')[2]}({', '.join(f'{k}={v}' for k, v in spec.kwargs.items())})"
    weights: dict[str, Any]
    if spec.weights is not None:
        state = load_state_dict(spec.weights, where)
        _check_fit(module, state, spec.weights, where)
        own = module.state_dict()
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
        weights = {"weights": f"file {spec.weights.name}", "weights_sha256": file_sha256(spec.weights)}
    elif spec.pretrained:
        weights = {"weights": f"timm pretrained {spec.timm} (local cache)"}
    else:
        weights = {"weights": f"random initialisation (torch seed {init_seed})"}
    module.eval()
    weights["state_sha256"] = state_sha256(module)
    n_params = int(sum(p.numel() for p in module.parameters()))
    model = LoadedModel(spec, module, architecture, n_params, weights)
    model.check_layers(where)
    return model


def _folded(conv: torch.nn.Conv2d, norm: torch.nn.BatchNorm2d) -> torch.nn.Conv2d:
    """A convolution computing ``norm(conv(x))`` of an eval-mode norm."""
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - norm.running_mean.double()) * scale
    if norm.bias is not None:
        bias = bias + norm.bias.double()
    out = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, bias=True,
                          device=conv.weight.device, dtype=conv.weight.dtype)
    out.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
    out.bias.copy_(bias)
    return out.eval()


def to_numpy(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """A batch of activations as a contiguous numpy array of the storage dtype."""
    return t.detach().to("cpu", dtype=getattr(torch, np.dtype(dtype).name)).contiguous().numpy()
