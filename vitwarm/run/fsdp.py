"""Sharding a phase's model with torch's FSDP2 (``run.parallel=fsdp``), and its whole weights when needed.

vitwarm applies torch's composable ``fully_shard`` itself, to each transformer block (one shard unit each)
and then to the root, inside the process group ``accelerate launch`` starts: one code path for CPU
processes over gloo (the tests) and GPUs over NCCL. Accelerate's own FSDP plugin is not used: in
Accelerate 1.16 it shards only over a GPU-type distributed state, and never over CPU processes.

- ``resolve``: the launch's parallel mode. An accelerate config of ``distributed_type: FSDP`` chooses
  ``fsdp`` as ``run.parallel=fsdp`` does (its ``fsdp_activation_checkpointing`` turns on
  ``run.grad_checkpointing``); Accelerate is then told nothing of FSDP, so it never wraps the model.
- ``shard``: before the optimizer is built, so that it is built over the sharded parameters (DTensors
  sharded on dim 0). With one process there is nothing to shard and the model stays plain; its
  checkpoints are sharded ones all the same (vitwarm.run.sharded_checkpoints), so a run can change its
  number of processes at any resume.
- ``whole``: the model with every weight in one piece on the CPU, for what reads weights rather than
  running the model (the warm-up's transfer and attention scores, the exports). Every process calls it:
  gathering is collective.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Iterator
from weakref import WeakKeyDictionary

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf, read_write
from timm.models.vision_transformer import VisionTransformer
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from ..errors import ConfigError

# A meta-device copy of each sharded model, taken before sharding: the plain module ``whole`` fills.
_PLAIN: WeakKeyDictionary[torch.nn.Module, torch.nn.Module] = WeakKeyDictionary()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def resolve(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the launch's parallel mode in ``run.parallel``; call before the Accelerator exists.

    Refuses what FSDP runs do not do: an EMA copy, fp16 (it needs a gradient scaler).
    """
    if _env_flag("ACCELERATE_USE_FSDP"):  # accelerate launch with a distributed_type: FSDP config
        if os.environ.get("FSDP_VERSION", "1") != "2":
            raise ConfigError(f"the accelerate config asks for FSDP version {os.environ.get('FSDP_VERSION', '1')}; "
                              "vitwarm shards with FSDP2: set fsdp_config.fsdp_version: 2")
        os.environ.pop("ACCELERATE_USE_FSDP")  # Accelerate stays a plain process group: vitwarm shards
        cfg = OmegaConf.create(OmegaConf.to_container(cfg))
        with read_write(cfg):
            cfg.run.parallel = "fsdp"
            cfg.run.grad_checkpointing = cfg.run.grad_checkpointing or _env_flag("FSDP_ACTIVATION_CHECKPOINTING")
        OmegaConf.set_readonly(cfg, True)
    if cfg.run.parallel == "fsdp" and cfg.train.ema_decay > 0:
        raise ConfigError(f"train.ema_decay={cfg.train.ema_decay} with run.parallel=fsdp: FSDP runs keep no EMA "
                          "copy (a whole model on every process); use train.ema_decay=0 or run.parallel=ddp")
    if cfg.run.parallel == "fsdp" and cfg.precision == "fp16":
        raise ConfigError("precision=fp16 with run.parallel=fsdp: sharded runs have no gradient scaler; use "
                          "precision=bf16 or fp32")
    return cfg


def _vits(model: torch.nn.Module) -> list[VisionTransformer]:
    return [m for m in model.modules() if isinstance(m, VisionTransformer)]


def shard(cfg: DictConfig, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` on the training device, activation checkpointing as configured and, under FSDP with more than
    one process, each transformer block and then the root sharded over every process (in place)."""
    for vit in _vits(model):
        vit.set_grad_checkpointing(cfg.run.grad_checkpointing)
    if cfg.run.parallel != "fsdp" or accelerator.num_processes == 1:
        return model.to(accelerator.device)
    # Built on the CPU: its buffers are copied there (they are small), its parameters are left on meta.
    plain = copy.deepcopy(model, {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
                                  for p in model.parameters()})
    model = model.to(accelerator.device)
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    # bf16 weights for compute and all-gather, fp32 gradients for the reduction, fp32 master weights in the
    # optimizer; on GPUs only (the CPU path is for tests, where fp32 keeps runs comparable).
    bf16 = cfg.precision == "bf16" and accelerator.device.type == "cuda"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    for vit in _vits(model):
        for block in dict.fromkeys(vit.blocks):  # a block shared by several depths is one unit
            fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    _PLAIN[model] = plain
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def whole(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """The plain module with whole weights: ``model`` itself unless sharded, else a CPU copy gathered from every
    process (collective: every process calls it, and each gets the copy)."""
    if not is_sharded(model):
        return accelerator.unwrap_model(model)
    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    plain = copy.deepcopy(_PLAIN[model])
    plain.load_state_dict({k: v.to("cpu") for k, v in weights.items()}, assign=True)
    return plain.train(model.training)


def lockstep(batches: Iterable, model: torch.nn.Module, accelerator: Accelerator,
             idle: Callable[[], object]) -> Iterator:
    """``batches``, and under FSDP, once this process's are spent, a call of ``idle`` (a forward of a dummy
    batch, its output unused) for each batch another process still has: every forward of a sharded model is
    collective, so all processes make the same number (evaluation splits deal their shards unevenly).
    Under FSDP this is one reduction per batch; otherwise ``batches`` as they are."""
    if not is_sharded(model):
        yield from batches
        return
    batches = iter(batches)
    while True:
        batch = next(batches, None)
        if not accelerator.reduce(torch.tensor([batch is not None], device=accelerator.device).int()).item():
            return
        if batch is None:
            idle()
        else:
            yield batch
