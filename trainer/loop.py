"""The training loop, under accelerate: only the main process writes files, events and TensorBoard."""

from __future__ import annotations

import contextlib
import time
import traceback
import uuid
from collections import deque
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from PIL import Image

from .config import TrainConfig
from .config_io import config_to_yaml
from .data import BatchDataset, MicroBatch, make_loader, schedule
from .errors import UserError
from .events import RunLog
from .export import save_lora
from .families import sd
from .latents import LatentCache, encode_pixels
from .loss import training_loss
from .metadata import build_metadata, for_save
from .network import add_lora, kohya_state_dict
from .noise import noisy_latents
from .optim import make_optimizer, make_scheduler, optimizer_name
from .preflight import Preflight, output_paths, run_preflight
from .sampling import generate, load_prompts

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
        self.model = sd.load_sd(config, HALF.get(config.mixed_precision, torch.float32))
        resolved = config.model_copy(update={"v2": self.model.v2,
                                             "v_parameterization": self.model.v_parameterization})
        if self.log.enabled:
            (self.log.run_dir / "config.yaml").write_text(config_to_yaml(resolved), encoding="utf-8")
        self._place_models()
        groups = self._inject_lora()
        self.cache = self._build_cache()
        self.batches = schedule(self.pre.entries, config.train_batch_size, config.gradient_accumulation_steps,
                                config.seed, plan.total_steps, self.accelerator.process_index,
                                self.accelerator.num_processes)
        self.loader = make_loader(BatchDataset(self.pre.entries, self.batches, self.cache),
                                  config.max_data_loader_n_workers)
        self.optimizer = make_optimizer(config, groups)
        self.group_names = [g["name"] for g in groups]
        self.scheduler = make_scheduler(config, self.optimizer, plan.total_steps)
        # Only trained parts are prepared: a DDP wrapper needs parameters that take gradients.
        self.unet, self.text_encoder = self.model.unet, self.model.text_encoder
        if config.train_unet:
            self.unet = self.accelerator.prepare(self.unet)
        if config.train_text_encoder:
            self.text_encoder = self.accelerator.prepare(self.text_encoder)
        self.optimizer = self.accelerator.prepare(self.optimizer)
        self.metadata = build_metadata(
            config, plan, self.pre.scan, base_model_version=self.model.base_model_version, v2=self.model.v2,
            v_parameterization=self.model.v_parameterization, optimizer=optimizer_name(self.optimizer.optimizer),
            session_id=uuid.uuid4().hex[:8], started_at=time.time())

    def _place_models(self) -> None:
        device, model = self.accelerator.device, self.model
        for part in (model.vae, model.unet, model.text_encoder):
            part.to(device)
        if self.config.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
            model.text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def _inject_lora(self) -> list[dict]:
        config, model = self.config, self.model
        model.text_encoder.requires_grad_(False).eval()
        model.unet.requires_grad_(False)
        groups = []
        if config.train_unet:
            groups.append({"name": "unet", "lr": config.effective_unet_lr,
                           "params": add_lora(model.unet, sd.UNET_TARGETS, config.network_dim, config.network_alpha)})
        if config.train_text_encoder:
            groups.append({"name": "text_encoder", "lr": config.effective_text_encoder_lr,
                           "params": add_lora(model.text_encoder, sd.TEXT_ENCODER_TARGETS,
                                              config.network_dim, config.network_alpha)})
            model.text_encoder.train()
        model.unet.train(config.train_unet)
        for group in groups:  # trained weights stay fp32 even when the frozen base is half precision
            for param in group["params"]:
                param.data = param.data.float()
        return groups

    def _build_cache(self) -> LatentCache | None:
        if not self.config.cache_latents:
            return None
        cache = LatentCache(self.model.vae, self.config.cache_latents_to_disk)
        started = time.time()
        encoded = cache.fill(self.pre.entries, batch_size=self.config.train_batch_size)
        self.log.info(f"latents cached: {encoded} encoded in {time.time() - started:.1f}s")
        return cache

    # --- training -----------------------------------------------------------------------------------
    def run(self) -> str:
        if self.config.sample_at_first:
            self._sample(epoch=0)
        status = "completed"
        self.step_times.append(time.time())
        micro_losses: list[float] = []
        for index, data in enumerate(self.loader):
            batch = self.batches[index]
            micro_losses.append(self._forward_backward(data, batch))
            if not batch.last_of_step:
                continue
            self._optimizer_step(float(np.mean(micro_losses)), batch)
            micro_losses.clear()
            epoch_ends = index + 1 == len(self.batches) or self.batches[index + 1].epoch != batch.epoch
            if self._stop_requested():
                status = "stopped"
                break
            self._after_step(batch, epoch_ends)
        self._save(self._final_path(), self.epoch)
        self.log.event("finished", status=status, step=self.step)
        self.log.info(f"training {status} at step {self.step}")
        return status

    def _forward_backward(self, data: dict, batch: MicroBatch) -> float:
        model, accelerator, config = self.model, self.accelerator, self.config
        if "latents" in data:
            latents = data["latents"].to(accelerator.device)
        else:
            latents = encode_pixels(model.vae, data["pixels"])
        noisy, noise, timesteps = noisy_latents(config, model.noise_scheduler, latents)
        with accelerator.autocast():
            hidden = self._text_embeddings(data)
            prediction = self.unet(noisy, timesteps, hidden).sample
        target = sd.training_target(model.noise_scheduler, latents, noise, timesteps)
        loss = training_loss(config, model.noise_scheduler, prediction, target, timesteps, data["is_reg"])
        with self._sync_only_on_last(batch):
            accelerator.backward(loss / batch.micro_batches)
        return loss.item()

    def _text_embeddings(self, data: dict) -> torch.Tensor:
        ids = sd.tokenize(self.model.tokenizer, data["captions"]).to(self.accelerator.device)
        with torch.set_grad_enabled(self.config.train_text_encoder):
            return sd.encode_tokens(self.text_encoder, ids, self.config.clip_skip)

    def _sync_only_on_last(self, batch: MicroBatch) -> contextlib.ExitStack:
        """Gradients of an accumulation group are all-reduced once, with its last micro-batch."""
        stack = contextlib.ExitStack()
        if not batch.last_of_step:
            for part in (self.unet, self.text_encoder):
                if hasattr(part, "no_sync"):  # only DDP-wrapped (trained, multi-process) parts sync
                    stack.enter_context(self.accelerator.no_sync(part))
        return stack

    def _stop_requested(self) -> bool:
        """The main process reads STOP; every process learns it in the same step, so none waits alone."""
        if self.accelerator.is_main_process and self.log.stop_requested():
            self.accelerator.set_trigger()
        return self.accelerator.check_trigger()

    def _optimizer_step(self, loss: float, batch: MicroBatch) -> None:
        if self.config.max_grad_norm > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            self.accelerator.clip_grad_norm_(params, self.config.max_grad_norm)
        lrs = {name: group["lr"] for name, group in zip(self.group_names, self.optimizer.param_groups)}
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step, self.epoch = batch.step, batch.epoch
        self.losses.append(loss)
        self.step_times.append(time.time())
        self._log_step(loss, lrs, batch.epoch)

    def _log_step(self, loss: float, lrs: dict[str, float], epoch: int) -> None:
        total = self.pre.plan.total_steps
        it_s = (len(self.step_times) - 1) / max(self.step_times[-1] - self.step_times[0], 1e-9)
        avg = float(np.mean(self.losses))
        self.log.event("step", step=self.step, epoch=epoch, loss=loss, avg_loss=avg,
                       lr=next(iter(lrs.values())), lrs=lrs, it_s=round(it_s, 4),
                       eta_s=round((total - self.step) / it_s, 1) if it_s > 0 else None)
        self.log.scalars({"loss/current": loss, "loss/average": avg,
                          **{f"lr/{name}": lr for name, lr in lrs.items()}}, self.step)
        if self.step == 1 or self.step % 10 == 0 or self.step == total:
            self.log.info(f"step {self.step}/{total} epoch {epoch} loss {loss:.4f} avg {avg:.4f} {it_s:.2f} it/s")

    def _after_step(self, batch: MicroBatch, epoch_ends: bool) -> None:
        config = self.config
        if config.sample_every_n_steps and self.step % config.sample_every_n_steps == 0:
            self._sample(batch.epoch)
        if not epoch_ends:
            return
        last_epoch = self.step == self.pre.plan.total_steps  # its file is the final one
        if config.save_every_n_epochs and batch.epoch % config.save_every_n_epochs == 0 and not last_epoch:
            self._save(self._final_path().with_name(
                f"{config.output_name}-{batch.epoch:06d}.{config.save_model_as}"), batch.epoch)
        if config.sample_every_n_epochs and batch.epoch % config.sample_every_n_epochs == 0:
            self._sample(batch.epoch)

    # --- outputs ------------------------------------------------------------------------------------
    def _final_path(self) -> Path:
        return output_paths(self.config, self.pre.plan)[0]

    def _save(self, path: Path, epoch: int) -> None:
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        tensors = {}
        alpha = self.config.network_alpha
        if self.config.train_unet:
            tensors.update(kohya_state_dict(self.accelerator.unwrap_model(self.model.unet), sd.UNET_PREFIX, alpha))
        if self.config.train_text_encoder:
            text_encoder = self.accelerator.unwrap_model(self.model.text_encoder)
            tensors.update(kohya_state_dict(text_encoder, sd.TEXT_ENCODER_PREFIX, alpha,
                                            sd.text_encoder_module_root(text_encoder)))
        save_lora(path, tensors, for_save(self.metadata, epoch, self.step), self.config.save_precision)
        self.log.event("checkpoint", path=str(path), epoch=epoch, step=self.step)
        self.log.info(f"saved {path}")

    def _sample(self, epoch: int) -> None:
        if not self.prompts or not self.accelerator.is_main_process:
            return
        model = self.model
        modes = (model.unet.training, model.text_encoder.training)
        model.unet.eval(), model.text_encoder.eval()
        for index, spec in enumerate(self.prompts):
            image = generate(model, spec, self.config.sample_sampler, self.config.clip_skip, self.config.seed,
                             self.accelerator.device, self.accelerator.autocast)
            path = self.log.samples_dir / f"e{epoch:04d}-s{self.step:06d}-p{index}.png"
            Image.fromarray(image).save(path)
            self.log.event("sample", path=str(path), step=self.step, epoch=epoch, prompt=spec.prompt)
            self.log.image(f"sample/p{index}", image, self.step)
        model.unet.train(modes[0]), model.text_encoder.train(modes[1])


def train(config: TrainConfig, run_dir: Path) -> str:
    """Run one training into run_dir; every outcome ends with a `finished` event."""
    # cpu=True without CUDA: several CPU processes (torchrun) then sync through gloo instead of running apart.
    # PartialState is a singleton, so the first call decides for the Accelerator below too.
    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    log = RunLog(run_dir, enabled=state.is_main_process)
    try:
        # Preflight comes before Accelerator, which rejects fp16 on a CPU with a bare traceback.
        pre = run_preflight(config, state.num_processes)
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=cpu)
        trainer = Trainer(config, pre, log, accelerator)
        trainer.setup()
        return trainer.run()
    except UserError as exc:
        log.event("error", message=exc.message, hint=exc.hint)
        log.event("finished", status="failed")
        raise
    except BaseException as exc:
        log.warning(traceback.format_exc())
        log.event("error", message=f"{type(exc).__name__}: {exc}", hint="see train.log for the details")
        log.event("finished", status="failed")
        raise
    finally:
        log.close()
