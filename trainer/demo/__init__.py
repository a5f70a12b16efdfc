"""The offline demo: a tiny SD model and a synthetic dataset built locally, and the config that trains them."""
