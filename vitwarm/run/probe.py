"""The warm-up's probe and adaptive stop, as the training loop calls them (``Watch``), and at its end the
attention-structure scores of the warmed-up ViT (vitwarm.models.attention_scores).

The probe (vitwarm.procedural.probe) is evaluated at step 0, at the first log record at or after every
``warmup.probe.every_steps`` steps, and at the phase's last step: always right after a log window's sync,
so it adds one reduction of its own there and nothing between log records. Its history and the stop
decision live in the checkpointed ``RunState`` (``probe``, ``stop_step``), so a resumed run rebuilds the
same probe set from the seed, reads the same curve and ends the phase at the same step.
"""

from __future__ import annotations

from functools import partial

import torch
from accelerate import Accelerator
from omegaconf import DictConfig

from ..models.attention_scores import attention_scores
from ..procedural import ProceduralTask
from ..procedural.probe import probe_counts, probe_metrics, probe_share
from ..seeds import derive_seed
from .checkpoints import RunState
from .fsdp import lockstep
from .plan import Phase, to_steps
from .plateau import decay_start, plateau_decision, transition_index


class Watch:
    """The probe set (this process's share, on the device) and the stop rule of one warm-up phase."""

    def __init__(self, cfg: DictConfig, phase: Phase, task: ProceduralTask, accelerator: Accelerator):
        w = cfg.warmup
        self.phase, self.accelerator, self.cfg = phase, accelerator, w
        self.every = w.probe.every_steps if w.probe.size else 0
        self.names = [grammar.name for grammar in task.grammars]
        self.plateau = w.stop == "plateau"
        self.cooldown = to_steps(fraction=w.cooldown, of_steps=phase.steps) if self.plateau else 0
        self.decision: int | None = None
        self.batches: list[dict[str, torch.Tensor]] = []
        if self.every:
            share = probe_share(task, w.probe.size, derive_seed(cfg.seed, "probe"), accelerator.process_index,
                                accelerator.num_processes)
            size = len(share["tokens"])
            self.batches = [{k: torch.from_numpy(v[i:i + phase.micro_batch]).to(accelerator.device)
                             for k, v in share.items()} for i in range(0, size, phase.micro_batch)]

    def decay_start(self) -> int:
        """First step of the plateau schedule's cool-down (vitwarm.run.plateau.WSD reads it every step)."""
        return decay_start(self.phase.steps, self.cooldown, self.decision)

    def end(self) -> int:
        """The step the phase ends at: the planned steps, or the end of the cool-down after a stop."""
        return self.decay_start() + self.cooldown if self.plateau else self.phase.steps

    def begin(self, model: torch.nn.Module, state: RunState) -> list[dict]:
        """Take up ``state`` (a resumed run's decision); at step 0, the step-0 probe's records."""
        self.decision = state.stop_step
        if state.step or not self.every:
            return []
        state.probe, state.stop_step = [], None
        return self.probe(model, state)

    def due(self, step: int, log_every: int, done: bool) -> bool:
        """Whether a log record at ``step`` is followed by a probe: a multiple of every_steps since the last one."""
        return bool(self.every) and (done or step // self.every != (step - log_every) // self.every)

    @torch.no_grad()
    def probe(self, model: torch.nn.Module, state: RunState) -> list[dict]:
        """Evaluate the probe now (one reduction: a sync of its own), record it in ``state``, apply the stop
        rule; returns the records to log (the probe's, and the stop's when it fires)."""
        was_training = model.training
        model.eval()
        idle = partial(model, self.batches[0]["tokens"][:1])  # under FSDP, while other processes have batches left
        counts = sum(probe_counts(model(b["tokens"]), b["targets"], b["loss_mask"], b["grammar"], len(self.names))
                     for b in lockstep(self.batches, model, self.accelerator, idle))  # float64 (grammars, 3)
        model.train(was_training)
        metrics = probe_metrics(self.accelerator.reduce(counts, reduction="sum").tolist(), self.names)
        state.probe.append([state.step, metrics["probe_acc"]])
        records = [{"event": "probe", "phase": self.phase.name, "step": state.step,
                    "samples": state.step * self.phase.global_batch} | metrics]
        # Decided only after the LR warm-up and before the cap's own cool-down has begun.
        if self.plateau and self.decision is None and self.phase.lr_warmup_steps <= state.step < self.decay_start():
            accs = [acc for _, acc in state.probe]
            fired = plateau_decision(accs, rise=self.cfg.stop_rise, min_gain=self.cfg.stop_min_gain,
                                     patience=self.cfg.stop_patience)
            if fired is not None:
                state.stop_step = self.decision = state.step
                records.append({"event": "warmup_stop", "phase": self.phase.name, "step": state.step,
                                "transition_step": state.probe[transition_index(accs, self.cfg.stop_rise)][0],
                                "end_step": self.end(), "planned_steps": self.phase.steps})
        return records


    def finish(self, model: torch.nn.Module, state: RunState) -> None:
        """At the phase's end: what the warm-up instilled, the attention-structure scores of its ViT."""
        state.attention = attention_scores(model.vit)


def probe_summary(state: RunState, cfg: DictConfig) -> dict:
    """summary.json's ``probe``: first, last and best probe accuracy, the transition and the stop."""
    if not state.probe:
        return {}
    accs = [acc for _, acc in state.probe]
    best = max(range(len(accs)), key=accs.__getitem__)
    transition = transition_index(accs, cfg.warmup.stop_rise)
    return {"start_acc": accs[0], "last_acc": accs[-1], "best_acc": accs[best], "best_step": state.probe[best][0],
            "transition_step": None if transition is None else state.probe[transition][0],
            "stop": cfg.warmup.stop, "stop_step": state.stop_step}
