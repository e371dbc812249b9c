"""What every phase kind builds with: the configured ViT, its optimizer, Accelerate's preparation, and the
``Training`` a kind's setup hands the loop; ``PhaseKind`` is what a kind module registers.

A phase kind is one module beside this one (``warmup.py``, ``image.py``) that owns three things: its
``setup`` (a ``Training`` for the loop), its ``check`` (the dry build preflight runs on the meta device
before step 1) and, optionally, its ``end`` (what happens once its last step is done, before the phase-end
checkpoint). vitwarm.run.phases.KINDS maps each ``Phase.kind`` to its kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import timm
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer
from timm.optim import create_optimizer_v2, get_optimizer_class
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from ...errors import ConfigError
from ...models import mimetic_init_
from ...seeds import derive_seed
from ..plan import Phase


@dataclass
class Training:
    """Everything the training loop needs for one phase (what a kind's ``setup`` returns)."""

    model: torch.nn.Module  # prepared by Accelerate (DDP-wrapped when distributed)
    optimizer: torch.optim.Optimizer
    scheduler: object  # timm scheduler: step_update(num_updates) sets the LR of a step
    batches: Iterator  # this process's micro-batches, from the resume position on
    loss: Callable  # (model, batch) -> (loss, {name: count tensor to all-reduce})
    ema: ModelEmaV3 | None = None
    watch: object | None = None  # vitwarm.run.probe.Watch: the warm-up's probe and stop rule; None: neither
    data_ranks: list[int] | None = None  # the data ranks whose micro-batches ``batches`` gives in turn, each
    # grad_accum per step (vitwarm.run.images); None: this process's own rank


@dataclass(frozen=True)
class PhaseKind:
    """One kind of phase, as its module registers it; the loop and preflight call these and name no phase."""

    setup: Callable[..., Training]
    """(cfg, phase, accelerator, images: vitwarm.run.images.ImageData, start_step) -> Training."""
    check: Callable[..., None]
    """(cfg, phase, plan, image_vit on the meta device, world_size) -> None; raises ConfigError naming the key."""
    end: Callable[..., str] | None = None
    """(cfg, training, accelerator, images) -> a line for the log; runs after the last step, before the
    phase-end checkpoint. None: nothing."""
    flops_per_sample: Callable[[DictConfig], float] | None = None
    """cfg -> forward FLOPs of one of its samples, for the plan; None: one image on the image model."""


@contextmanager
def blame(what: str) -> Iterator[None]:
    """Turn a builder's complaint into a ConfigError that starts with the config keys it came from."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError, AssertionError, KeyError, RuntimeError) as err:
        reason = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        raise ConfigError(f"{what}: {reason}") from None


def build_vit(model: DictConfig, section: str = "model", **kwargs) -> VisionTransformer:
    """The timm ViT of a config's model section (``section``: its key, for messages: ``model`` or the warm-up's
    ``warmup.model``); ``kwargs`` (num_classes, ...) add to its kwargs."""
    model_kwargs = OmegaConf.to_container(model.kwargs) | kwargs
    try:
        vit = timm.create_model(model.name, pretrained=False, in_chans=model.in_chans, **model_kwargs)
    except TypeError as err:  # an argument the model class does not take, or no ViT at all
        with torch.device("meta"):
            _check_is_vit(timm.create_model(model.name, pretrained=False), model.name, section)
        valid = sorted(set(inspect.signature(VisionTransformer.__init__).parameters) - {"self", "kwargs"})
        raise ConfigError(f"{section}.kwargs={OmegaConf.to_container(model.kwargs)} cannot build {model.name}: "
                          f"{err}; valid arguments of timm's VisionTransformer: {', '.join(valid)}") from None
    except (ValueError, AssertionError, RuntimeError) as err:  # values the model cannot be built with
        raise ConfigError(f"{section}.name={model.name} with {section}.kwargs={OmegaConf.to_container(model.kwargs)} "
                          f"cannot be built: {type(err).__name__}: {err}") from None
    _check_is_vit(vit, model.name, section)
    return vit


def _check_is_vit(model: torch.nn.Module, name: str, section: str) -> None:
    if not isinstance(model, VisionTransformer):
        examples = ", ".join(timm.list_models("vitwarm_*")[:3] + ["vit_small_patch16_224", "deit_tiny_patch16_224"])
        raise ConfigError(f"{section}.name={name} is a {type(model).__name__}, not a timm VisionTransformer; "
                          f"supported are timm's VisionTransformer models and their subclasses, e.g. {examples}")


def create_vit(cfg: DictConfig, purpose: str, model: DictConfig | None = None, section: str = "model",
               **kwargs) -> VisionTransformer:
    """The configured timm ViT with a seeded initialisation (``model.init``), so a restarted run rebuilds it;
    ``model``/``section``: another model section than ``cfg.model`` (see `build_vit`)."""
    torch.manual_seed(derive_seed(cfg.seed, purpose))
    vit = build_vit(cfg.model if model is None else model, section, **kwargs)
    if cfg.model.init == "mimetic":
        mimetic_init_(vit, seed=derive_seed(cfg.seed, purpose, "mimetic"), **cfg.model.mimetic)
    return vit


def optimizer_implementation(opt: str, device: torch.device | None) -> dict:
    """Keyword arguments picking torch's fastest Adam(W) kernel for ``device``; {} for other optimizers.

    Fused (one kernel over all parameters) exists for CUDA and CPU (torch >= 2.4); on a 2-core CPU it steps
    a 0.8M-parameter ViT in 1.5 ms against 4.7 ms for the default per-tensor loop. Elsewhere foreach.
    ``device`` None (the dry build on the meta device): torch's default.
    """
    if device is None:
        return {}
    if get_optimizer_class(opt.split("_")[-1], bind_defaults=False) not in (torch.optim.AdamW, torch.optim.Adam):
        return {}  # timm's own optimizers choose their implementation themselves
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}


def make_optimizer(cfg_opt: DictConfig, model: torch.nn.Module, phase: Phase, opt: str, sched: str,
                   device: torch.device | None = None):
    """timm's optimizer and scheduler for ``phase`` (``device`` None: the dry build on the meta device)."""
    optimizer = create_optimizer_v2(model, opt=opt, lr=cfg_opt.lr, weight_decay=cfg_opt.weight_decay,
                                    **optimizer_implementation(opt, device))
    # One scheduler "epoch" = one optimizer step, so all lengths below are steps.
    scheduler, _ = create_scheduler_v2(optimizer, sched=sched, num_epochs=phase.steps, min_lr=cfg_opt.min_lr,
                                       warmup_epochs=phase.lr_warmup_steps, warmup_lr=cfg_opt.min_lr,
                                       step_on_epochs=False, updates_per_epoch=1)
    return optimizer, scheduler


def check_optimizer(section: str, opt_cfg: DictConfig, model: torch.nn.Module, phase: Phase, opt: str,
                    sched: str) -> None:
    """timm's optimizer and scheduler factories, as the phase will call them (meta parameters)."""
    with blame(f"{section}.opt={opt!r} / {section}.sched={sched!r}"):
        make_optimizer(opt_cfg, model, phase, opt=opt, sched=sched)


def prepare(cfg: DictConfig, accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             ema_decay: float = 0.0) -> tuple[torch.nn.Module, torch.optim.Optimizer, ModelEmaV3 | None]:
    """Accelerate's device placement and wrapping, then the EMA copy and torch.compile, in that order.

    The EMA is copied from the prepared model, so it lives on the training device and its updates never
    mix devices; it is copied before compiling, so evaluating it runs eagerly and compiles nothing. Under
    run.parallel=fsdp the model is sharded already (vitwarm.run.fsdp.shard) and Accelerate must not wrap it.
    """
    if cfg.run.parallel != "fsdp":
        model, optimizer = accelerator.prepare(model, optimizer)
    ema = ModelEmaV3(accelerator.unwrap_model(model), decay=ema_decay) if ema_decay > 0 else None
    if cfg.train.compile:
        # Every compiled module shares the cache of nn.Module._call_impl and its recompile limit (8 by
        # default): drop the previous phase's graphs so that this phase's train/eval shapes fit in it.
        torch._dynamo.reset()
        model.compile()  # in place: state-dict keys, unwrap_model and checkpoints stay as without compile
    return model, optimizer, ema
