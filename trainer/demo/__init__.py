"""The offline demo: the tiny SD1 model (trainer/families/tiny_sd.py) and a synthetic dataset built locally, and the
config that trains them."""
