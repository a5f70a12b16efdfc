"""One training run: the loop under accelerate, loss and noise, optimizers, previews, saving, health."""
