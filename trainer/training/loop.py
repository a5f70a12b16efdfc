"""The training loop, under accelerate: only the main process writes files, events and TensorBoard."""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from PIL import Image

from trainer.adapters.layers import apply_max_norm, lora_layers
from trainer.checks.preflight import Preflight, run_preflight
from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.config.io import config_to_yaml
from trainer.dataset.latents import LatentCache, encode_pixels
from trainer.dataset.prefetch import ahead, depth_for
from trainer.dataset.share import shares_text
from trainer.dataset.stream import BatchDataset, MicroBatch, make_loader, schedule
from trainer.dataset.te_cache import build_text_encoder_cache
from trainer.families.base import Conditioning
from trainer.families.registry import fp8_components, load_family
from trainer.run.events import RunLog
from trainer.training.block_swap import BlockSwap, swapped_modules
from trainer.training.checkpoints import Saver, keep_only_lora_weights, load_train_state
from trainer.training.distributed import ddp_options, process_group_options, share_of
from trainer.training.draws import draws_for
from trainer.training.export import save_lora
from trainer.training.fp8 import store_in_fp8
from trainer.training.health import (
    Diverged,
    HealthMonitor,
    PreviewJudge,
    corrupt_weights_event,
)
from trainer.training.metadata import build_metadata, for_save
from trainer.training.network import inject_network
from trainer.training.offload_checkpointing import offloading_checkpoint
from trainer.training.optim import (
    make_optimizer,
    make_scheduler,
    optimizer_name,
    step_lrs,
)
from trainer.training.quantize import quantize_linear_layers
from trainer.training.sampling import load_prompts
from trainer.training.speed import speed_up_denoiser, use_cpu_threads

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Trainer:
    def __init__(self, config: TrainConfig, pre: Preflight, log: RunLog, accelerator: Accelerator):
        self.accelerator = accelerator
        self.config = config
        self.pre = pre
        self.log = log
        self.prompts = load_prompts(config.sample_prompts, config.resolution_wh)
        self.step = self.epoch = 0
        self.losses: deque[float] = deque(maxlen=max(1, self.pre.plan.steps_per_epoch))
        self.step_times: deque[float] = deque(maxlen=20)  # it/s over recent steps, not the whole run

    # --- setup --------------------------------------------------------------------------------------
    def setup(self) -> None:
        config, plan = self.config, self.pre.plan
        for warning in self.pre.warnings:
            self.log.warning(warning)
        self.log.event("plan", **plan.as_event())
        self.log.info("step plan:\n" + plan.describe())
        set_seed(config.seed)
        self.model = load_family(config, HALF.get(config.mixed_precision, torch.float32))
        for warning in self.model.prepare():  # e.g. zero_terminal_snr, the SNR table
            self.log.warning(warning)
        # From here on the config holds what the model decided (family, v2, v-prediction, ...).
        config = self.config = self.model.config = self.model.config.model_copy(update=self.model.resolved())
        if self.log.enabled:
            (self.log.run_dir / "config.yaml").write_text(config_to_yaml(config), encoding="utf-8")
        self.health = HealthMonitor(config)  # diagnoses with the resolved family and precision
        self.previews = PreviewJudge()  # each preview against its prompt's first
        # Everything is loaded, cast and quantized on the CPU; the device holds one job's modules at a time (the
        # VAE while latents are cached, the text encoders while their outputs are), and the denoiser comes last.
        self.model.set_attention(config.sdpa, config.xformers)
        if config.gradient_checkpointing:
            self.model.enable_gradient_checkpointing(offloading_checkpoint if config.cpu_offload_checkpointing
                                                     else None)
        for name in sorted(fp8_components(config, self.model.name)):  # fp8_base, fp8_base_unet
            self.log.info(f"{name}: {store_in_fp8(self.model.components[name], HALF[config.mixed_precision])}")
        if config.quantize_base != "none":  # before LoRA, so peft wraps the quantized layers
            self.log.info(quantize_linear_layers(self.model.denoiser, config.quantize_base,
                                                 HALF.get(config.mixed_precision, torch.float32)))
        trained_dtype = HALF[config.mixed_precision] if config.full_fp16 or config.full_bf16 else torch.float32
        network = inject_network(config, self.model, trained_dtype, self.log)
        self.parts, self.alpha, groups = network.parts, network.alpha, network.groups
        for line in speed_up_denoiser(self.model.denoiser, config, self.accelerator.device):
            self.log.info(line)
        self.swap = self._block_swap()
        self.resident = self._resident()
        with self._visiting(["vae"]):
            self.cache = self._build_cache()
        texts = [text for spec in self.prompts for text in (spec.prompt, spec.negative)]
        with self._visiting(list(self.model.text_encoder_names)):
            self.te_cache = build_text_encoder_cache(config, self.model, self.pre.entries, texts, self.accelerator,
                                                     self.log.info, share_of(self.accelerator))
        self._place(self.resident, on_device=True)
        self.batches = schedule(self.pre.entries, config.train_batch_size, config.gradient_accumulation_steps,
                                config.seed, plan.total_steps, self.accelerator.process_index,
                                self.accelerator.num_processes)
        self.dataset = BatchDataset.from_config(self.pre.entries, self.batches, self.cache, config)
        self.optimizer = make_optimizer(config, groups)
        self.group_names = [g["name"] for g in groups]
        self.scheduler = make_scheduler(config, self.optimizer, plan.total_steps)
        # Only trained parts are prepared: a DDP wrapper needs parameters that take gradients.
        for part in self.parts:
            self.model.runners[part.name] = self.accelerator.prepare(part.module)
        self.optimizer = self.accelerator.prepare(self.optimizer)
        self.accelerator.register_save_state_pre_hook(keep_only_lora_weights)
        self.saver = Saver(config, self.accelerator, self._save)
        if config.full_fp16:
            _allow_fp16_gradients(self.accelerator)
        self.metadata = build_metadata(
            config, plan, self.pre.scan, model=self.model.metadata(), optimizer=optimizer_name(self.optimizer.optimizer),
            session_id=uuid.uuid4().hex[:8], started_at=time.time())

    def _resident(self) -> list[str]:
        """The components that stay on the device for the step loop: the denoiser, the VAE unless latents are
        cached, the text encoders unless their outputs are (those run in every step)."""
        config, model = self.config, self.model
        return [model.denoiser_name, *([] if config.cache_latents else ["vae"]),
                *([] if config.text_encoder_outputs_cached else model.text_encoder_names)]

    def _place(self, names: list[str], on_device: bool) -> None:
        """Move the named components to the device or back to the CPU (the one place the loop moves a model)."""
        device = self.accelerator.device if on_device else torch.device("cpu")
        for name in names:
            if self.swap is not None and name == self.model.denoiser_name:
                self.swap.place(device)  # the swapped blocks' frozen weights stay on the CPU
            else:
                self.model.components[name].to(device)
        self.log.info(f"{'placed on ' + str(device) if on_device else 'back on the CPU'}: {', '.join(names)}")

    def _block_swap(self) -> BlockSwap | None:
        """blocks_to_swap: the denoiser's last blocks visit the device only while they run (block_swap.py)."""
        if not self.config.blocks_to_swap:
            return None
        blocks = swapped_modules(self.model.denoiser, self.model.spec, self.config.blocks_to_swap)
        swap = BlockSwap(self.model.denoiser, blocks, self.accelerator.device)
        self.log.info(swap.describe())
        return swap

    @contextlib.contextmanager
    def _visiting(self, names: list[str]) -> Iterator[None]:
        """The named components on the device for one job (caching, previews), then back on the CPU; those
        resident on the device stay there."""
        visitors = [name for name in names if name not in self.resident]
        if not visitors:
            yield
            return
        self._place(visitors, on_device=True)
        try:
            yield
        finally:
            self._place(visitors, on_device=False)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _build_cache(self) -> LatentCache | None:
        if not self.config.cache_latents:
            return None
        # flip_aug picks the plain or the mirrored image's latents per sample, so both are cached.
        cache = LatentCache(self.model.vae, self.config.cache_latents_to_disk, with_flipped=self.config.flip_aug)
        started = time.time()
        encoded = cache.fill(self.pre.entries, batch_size=self.config.vae_batch_size,
                             share=share_of(self.accelerator))
        self.log.info(f"latents cached: {shares_text(encoded)} encoded in {time.time() - started:.1f}s")
        return cache

    # --- training -----------------------------------------------------------------------------------
    def run(self) -> str:
        if self.config.sample_at_first:
            self._sample(epoch=0)
        status = "completed"
        first = self._resume() if self.config.resume else 0
        self.step_times.append(time.time())
        micro_losses: list[torch.Tensor] = []  # on the device until the step's one host sync
        for index, data in self._stream(first):
            batch = self.batches[index]
            micro_losses.append(self._forward_backward(data, batch))
            if not batch.last_of_step:
                continue
            stop = self._optimizer_step(torch.stack(micro_losses).mean(), batch)
            micro_losses.clear()
            epoch_ends = index + 1 == len(self.batches) or self.batches[index + 1].epoch != batch.epoch
            if stop:
                status = "stopped"
                break
            self._after_step(batch, epoch_ends)
        self.saver.final(self.step, self.epoch)
        self.log.event("finished", status=status, step=self.step)
        self.log.info(f"training {status} at step {self.step}")
        return status

    def _stream(self, first: int) -> Iterator[tuple[int, dict]]:
        """(index, data) of the micro-batches from `first` on, built ahead on a thread while a GPU computes, in
        turn on the CPU (prefetch.py): one loader for the run, or a fresh one (and fresh workers) each epoch when
        persistent_data_loader_workers is off, as in sd-scripts."""
        indices = range(first, len(self.batches))
        spans = [indices] if self.config.persistent_data_loader_workers else [
            list(group) for _, group in itertools.groupby(indices, key=lambda i: self.batches[i].epoch)]
        depth = depth_for(self.accelerator.device.type)
        for span in spans:
            loader = make_loader(self.dataset, span, self.config.max_data_loader_n_workers, self.config.seed)
            with contextlib.closing(ahead(map(self._with_text, loader), depth)) as batches:
                yield from zip(span, batches)

    def _with_text(self, data: dict) -> dict:
        """A micro-batch with its cached text-encoder outputs (looked up where the batch is built, pinned for an
        asynchronous copy to the GPU)."""
        if self.te_cache is not None:
            cached = self.te_cache.get(data["captions"])
            data["conditioning"] = {name: _pinned(tensor) for name, tensor in cached.items()}
        return data

    def _resume(self) -> int:
        """Restore a saved state; returns the index of the first micro-batch still to train."""
        step, epoch = load_train_state(self.accelerator, Path(self.config.resume).expanduser())
        if step >= self.pre.plan.total_steps:
            raise UserError(f"resume: the state is at step {step}, and this plan has {self.pre.plan.total_steps} "
                            "steps in all", "raise max_train_epochs to train further",
                            zh=f"resume：保存的状态在第 {step} 步，而这次的计划一共只有 {self.pre.plan.total_steps} 步",
                            hint_zh="要继续训练，请调高 max_train_epochs")
        for _ in range(step):  # the schedule is a pure function of the step: replay it
            self.scheduler.step()
        self.step, self.epoch = step, epoch
        self.log.info(f"resumed from {self.config.resume} at step {step}, epoch {epoch}")
        return next(i for i, batch in enumerate(self.batches) if batch.step > step)

    def _forward_backward(self, data: dict, batch: MicroBatch) -> torch.Tensor:
        """One micro-batch's forward and backward pass; returns its loss, still on the device. With several
        processes the loss is weighted by this process's share of the global batch (stream.py schedule), so the
        all-reduced mean of the gradients is the global batch's."""
        model, accelerator = self.model, self.accelerator
        data = {**_on_device(data, accelerator.device), "draws": draws_for(batch, self.config.seed)}
        latents = data["latents"] if "latents" in data else encode_pixels(model.vae, data["pixels"])
        cond = data["conditioning"] if "conditioning" in data else model.encode_text(data["captions"])
        with accelerator.autocast():
            loss = model.loss(latents, cond, data) * batch.weight
        with self._sync_only_on_last(batch):
            accelerator.backward(loss / batch.micro_batches)
        return loss.detach()

    def _conditioning(self, texts: list[str]) -> Conditioning:
        if self.te_cache is not None:  # the text encoders do not run in training steps
            return {name: tensor.to(self.accelerator.device) for name, tensor in self.te_cache.get(texts).items()}
        return self.model.encode_text(texts)

    def _sync_only_on_last(self, batch: MicroBatch) -> contextlib.ExitStack:
        """Gradients of an accumulation group are all-reduced once, with its last micro-batch."""
        stack = contextlib.ExitStack()
        if not batch.last_of_step:
            for runner in self.model.runners.values():
                if hasattr(runner, "no_sync"):  # only DDP-wrapped (trained, multi-process) parts sync
                    stack.enter_context(self.accelerator.no_sync(runner))
        return stack

    def _optimizer_step(self, micro_loss: torch.Tensor, batch: MicroBatch) -> bool:
        """Update the weights unless the loss or the gradients are non-finite; returns whether STOP was asked."""
        loss, grad_norm, stop = self._step_values(micro_loss, self._grad_norm())
        if self._non_finite(loss, grad_norm):  # checked before the step: a NaN update never reaches the weights
            self._skip_update(loss, grad_norm, batch)
        else:
            self._update(loss, grad_norm, batch)
        return stop

    def _step_values(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> tuple[float, float, bool]:
        """The step's loss, gradient norm and STOP request, read back in the step's one host sync (a readback
        waits for the device to finish its queue, so one per micro-batch or value stalls a GPU step). With several
        processes one all-reduce carries all three: the loss averaged, NaN anywhere NaN everywhere, so every
        process decides alike; the main process reads STOP, and every process learns it in the same step."""
        stop = self.accelerator.is_main_process and self.log.stop_requested()
        values = torch.stack([loss.float(), grad_norm.to(loss.device, torch.float32), loss.new_full((), float(stop))])
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, "mean")
        loss_value, norm, stop_share = values.tolist()
        return loss_value, norm, stop_share > 0

    def _update(self, loss: float, grad_norm: float, batch: MicroBatch) -> None:
        """A finite step: the optimizer and the schedule move on, the step is logged and shown to the monitor."""
        # accelerate's wrapper only adds fp16's scaler step (and looks up an optional package every step)
        (self.optimizer if self.accelerator.scaler is not None else self.optimizer.optimizer).step()
        # The LRs this step used (and d·lr for D-Adaptation/Prodigy), read before the scheduler moves on.
        lrs, lr_effective = step_lrs(self.optimizer.optimizer, self.group_names)
        self.scheduler.step()
        self.optimizer.optimizer.zero_grad(set_to_none=True)  # accelerate's inspects the signature every call
        self.step, self.epoch = batch.step, batch.epoch
        self.losses.append(loss)
        self.step_times.append(time.time())
        # Under fp16's loss scaler an overflowing gradient is routine (the scaler skipped the step): no norm.
        finite_norm = grad_norm if math.isfinite(grad_norm) else None
        self._log_step(loss, lrs, batch.epoch, lr_effective, finite_norm)
        for event in self.health.observe(self.step, loss, finite_norm):
            self.log.health(**event.fields())

    def _grad_norm(self) -> torch.Tensor:
        """The total gradient norm, unscaled (fp16) and before clipping, on the device; clips to max_grad_norm when
        set. Computed without clipping too: it is the non-finite check of the gradients (one pass over the LoRA's
        gradients) and the health monitor's zero-gradient signal."""
        self.accelerator.unscale_gradients()
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if self.config.max_grad_norm > 0:  # torch's clip_grad_norm_ in two parts (accelerate's adds a DTensor pass)
            torch.nn.utils.clip_grads_with_norm_(params, self.config.max_grad_norm, norm)
        return norm

    def _non_finite(self, loss: float, grad_norm: float) -> bool:
        """Whether the loss or the gradients are NaN/inf (on any process: _step_values reduced them). Under fp16's
        loss scaler overflowing gradients are routine: the scaler skips that step and lowers its scale itself."""
        return not math.isfinite(loss) or (self.accelerator.scaler is None and not math.isfinite(grad_norm))

    def _skip_update(self, loss: float, grad_norm: float, batch: MicroBatch) -> None:
        """Drop a non-finite step's update. on_nan stop ends the run (Diverged); warn goes on, the schedule
        moving as if the step had been taken (as with a step the fp16 scaler skips)."""
        lr = next(iter(step_lrs(self.optimizer.optimizer, self.group_names)[0].values()))
        event = self.health.non_finite(batch.step, loss, grad_norm, lr)
        if event is not None:
            self.log.health(**event.fields())
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.on_nan == "stop":
            raise Diverged(event)
        if self.accelerator.scaler is not None:
            self.accelerator.scaler.update()  # closes the step that unscale_ opened, as a skipped scaler step does
        self.scheduler.step()
        self.step, self.epoch = batch.step, batch.epoch

    def _log_step(self, loss: float, lrs: dict[str, float], epoch: int,
                  lr_effective: dict[str, float] | None = None, grad_norm: float | None = None) -> None:
        total = self.pre.plan.total_steps
        it_s = (len(self.step_times) - 1) / max(self.step_times[-1] - self.step_times[0], 1e-9)
        avg = float(np.mean(self.losses))
        adapted = {"lr_effective": lr_effective} if lr_effective else {}
        self.log.event("step", step=self.step, epoch=epoch, loss=loss, avg_loss=avg,
                       lr=next(iter(lrs.values())), lrs=lrs, **adapted, grad_norm=grad_norm, it_s=round(it_s, 4),
                       eta_s=round((total - self.step) / it_s, 1) if it_s > 0 else None)
        norm = {} if grad_norm is None else {"grad_norm": grad_norm}
        self.log.scalars({"loss/current": loss, "loss/average": avg, **norm,
                          **{f"lr/{name}": lr for name, lr in lrs.items()},
                          **{f"lr_effective/{name}": lr for name, lr in (lr_effective or {}).items()}}, self.step)
        if self.step == 1 or self.step % 10 == 0 or self.step == total:
            self.log.info(f"step {self.step}/{total} epoch {epoch} loss {loss:.4f} avg {avg:.4f} {it_s:.2f} it/s")

    def _after_step(self, batch: MicroBatch, epoch_ends: bool) -> None:
        config = self.config
        self._apply_max_norm()
        self.saver.after_step(self.step, batch.epoch, epoch_ends, self.step == self.pre.plan.total_steps)
        if config.sample_every_n_steps and self.step % config.sample_every_n_steps == 0:
            self._sample(batch.epoch)
        if epoch_ends and config.sample_every_n_epochs and batch.epoch % config.sample_every_n_epochs == 0:
            self._sample(batch.epoch)

    def _apply_max_norm(self) -> None:
        if not self.config.scale_weight_norms:
            return
        layers = [layer for part in self.parts for layer in lora_layers(part.module).values()]
        scaled, mean, largest = apply_max_norm(layers, self.config.scale_weight_norms)
        self.log.scalars({"max_norm/keys_scaled": scaled, "max_norm/average_key_norm": mean,
                          "max_norm/max_key_norm": largest}, self.step)

    # --- outputs ------------------------------------------------------------------------------------
    def _save(self, path: Path, epoch: int) -> None:
        self._check_weights_finite(path)
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        tensors = self.model.export_tensors(self.alpha)
        metadata = {} if self.config.no_metadata else for_save(self.metadata, epoch, self.step)
        save_lora(path, tensors, metadata, self.config.save_precision)
        self.log.event("checkpoint", path=str(path), epoch=epoch, step=self.step)
        self.log.info(f"saved {path}")

    def _check_weights_finite(self, path: Path) -> None:
        """Nothing corrupt is saved: NaN/inf weights end the run before the file is written. Every process
        holds the same weights, so all of them stop together."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            event = corrupt_weights_event(self.config, self.step, path.name)
            self.log.health(**event.fields())
            raise Diverged(event)

    def _sample(self, epoch: int) -> None:
        if not self.prompts or not self.accelerator.is_main_process:
            return
        for part in self.parts:
            part.module.eval()
        with self._visiting(["vae"]):  # the VAE comes to the device for previews only
            for index, spec in enumerate(self.prompts):
                self._sample_one(index, spec, epoch)
        for part in self.parts:
            part.module.train()

    def _sample_one(self, index: int, spec, epoch: int) -> None:
        model, config = self.model, self.config
        with torch.no_grad(), self.accelerator.autocast():  # the latents; the family decodes outside autocast
            cond, uncond = (self._conditioning([text]) for text in (spec.prompt, spec.negative))
            seed = spec.seed if spec.seed is not None else config.seed
            image = model.generate(spec, cond, uncond, seed, config.sample_sampler)
        path = self.log.samples_dir / f"e{epoch:04d}-s{self.step:06d}-p{index}.png"
        Image.fromarray(image).save(path)
        self.log.event("sample", path=str(path), step=self.step, epoch=epoch, prompt=spec.prompt)
        self.log.image(f"sample/p{index}", image, self.step)
        event = self.previews.judge(index, image, self.step, str(path))  # a warning only: the run goes on
        if event is not None:
            self.log.health(**event.fields())


def train(config: TrainConfig, run_dir: Path) -> str:
    """Run one training into run_dir; every outcome ends with a `finished` event."""
    # cpu=True without CUDA: several CPU processes (torchrun) then sync through gloo instead of running apart.
    # PartialState is a singleton, so the first call decides for the Accelerator below too.
    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu, **process_group_options(config))
    log = RunLog(run_dir, enabled=state.is_main_process)
    log.info(use_cpu_threads())
    try:
        # Preflight comes before Accelerator, which rejects fp16 on a CPU with a bare traceback.
        pre = run_preflight(config, state.num_processes)
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=cpu, kwargs_handlers=ddp_options(config))
        trainer = Trainer(config, pre, log, accelerator)
        trainer.setup()
        return trainer.run()
    except Diverged as exc:  # the health event is written; no final file, the earlier files stay as they are
        log.event("finished", status="failed", step=exc.event.step)
        log.info(f"training failed at step {exc.event.step} ({exc.event.code})")
        return "failed"
    except UserError as exc:
        log.event("error", message=exc.message, hint=exc.hint, message_zh=exc.message_in("zh"),
                  hint_zh=exc.hint_in("zh"))
        log.event("finished", status="failed")
        raise
    except BaseException as exc:
        log.warning(traceback.format_exc())
        log.event("error", message=f"{type(exc).__name__}: {exc}", hint="see train.log for the details",
                  message_zh=f"训练出错：{type(exc).__name__}: {exc}", hint_zh="详情见 train.log")
        log.event("finished", status="failed")
        raise
    finally:
        log.close()


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    """Page-locked for an asynchronous copy to the GPU (the loader pins its own tensors the same way)."""
    return tensor.pin_memory() if torch.cuda.is_available() else tensor


def _on_device(data: dict, device: torch.device) -> dict:
    """A micro-batch's tensors (and its cached text-encoder outputs) on the device. The copies from pinned memory
    do not wait: the step's kernels queue behind them."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        return {name: move(tensor) for name, tensor in value.items()} if isinstance(value, dict) else value

    return {key: move(value) for key, value in data.items()}


def _allow_fp16_gradients(accelerator: Accelerator) -> None:
    """full_fp16 keeps fp16 gradients, which torch's GradScaler refuses to unscale; sd-scripts patches it the same
    way (patch_accelerator_for_fp16_training)."""
    original = accelerator.scaler._unscale_grads_

    def unscale(optimizer, inv_scale, found_inf, allow_fp16):
        return original(optimizer, inv_scale, found_inf, True)

    accelerator.scaler._unscale_grads_ = unscale
