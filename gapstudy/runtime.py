"""Where and how models run: the device, the precision, frozen copies, loading a policy. A leaf over torch and
transformers: imports nothing of the project, so every stage (the loop, the proxy trainer, the golden source) can."""
from __future__ import annotations

import contextlib
import copy

import torch


def load_policy(path, device):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).to(device)


def disable_dropout(model) -> None:
    """Dropout off, as TRL's preference trainers do by default: the policy's log-probs in the loss then match the
    sampler's and the reference's (both evaluated without dropout), and runs replay exactly."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for key in ("attn_pdrop", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_dropout", "dropout"):
        if isinstance(getattr(model.config, key, None), float):
            setattr(model.config, key, 0.0)  # a saved checkpoint keeps it off


def frozen(model, dtype=None):
    """A no-grad copy (in `dtype` when given: frozen models are kept in bf16 under precision=bf16)."""
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model if dtype is None else model.to(dtype)


def precision(cfg, device) -> tuple[torch.dtype | None, contextlib.AbstractContextManager]:
    """(dtype of frozen models, autocast context) for cfg.precision. bf16: the trained policy keeps float32 master
    weights and runs its forward passes under bf16 autocast (as TRL's bf16=True); the reference, anchor, baseline and
    sampler copies are stored in bf16. auto = bf16 on a CUDA device that supports it, float32 elsewhere."""
    name = cfg.get("precision", "auto")
    if name == "auto":
        name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp32":
        return None, contextlib.nullcontext()
    return torch.bfloat16, torch.autocast(device.type, dtype=torch.bfloat16)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is visible")
    return torch.device(name)
